"""Secrets never leak: sentinel credentials made at run time travel to the sandboxes (checked first,
so the test cannot pass vacuously), then every error path runs, then every byte the pipeline
left behind is searched for each sentinel in plain, URL-encoded and base64 form.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from itertools import islice
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from sandbox.amazon import LWA_PATH, AmazonSandbox
from sandbox.catalog import CatalogSpec
from sandbox.ebay import EbaySandbox
from sandbox.server import Fault
from sandbox.shopify import ShopifySandbox


def forms(secret: str) -> list[bytes]:
    return [secret.encode(), quote(secret, safe="").encode(), base64.b64encode(secret.encode())]


@pytest.fixture
def sentinels():
    tag = secrets.token_hex(12)
    return {"shopify": f"sentinel-shopify-{tag}", "amazon": f"sentinel-amazon-{tag}", "ebay": f"sentinel-ebay-{tag}"}


@pytest.mark.parametrize("shopify_way", ["client_credentials", "static_token"])
def test_no_sentinel_secret_survives_any_error_path(run, dirs, clock, sentinels, shopify_way):
    outputs = []
    minting = shopify_way == "client_credentials"  # a Dev Dashboard app: the sentinel is its client secret
    shop_auth = (dict(token=None, client_id="sentinel-client-id", client_secret=sentinels["shopify"],
                      token_lifetime_s=3, clock=clock) if minting else dict(token=sentinels["shopify"]))
    shop_env = ({"SHOPIFY_CLIENT_ID": "sentinel-client-id", "SHOPIFY_CLIENT_SECRET": sentinels["shopify"]} if minting
                else {"SHOPIFY_ACCESS_TOKEN": sentinels["shopify"]})
    with ShopifySandbox(CatalogSpec(size=60), throttle=False, **shop_auth) as shop, \
            AmazonSandbox(clock=clock, credential_secret=sentinels["amazon"], token_lifetime_s=5) as amazon, \
            EbaySandbox(clock=clock, client_secret=sentinels["ebay"], token_lifetime_s=3) as ebay:
        env = {"SHOPIFY_API_BASE_URL": shop.base_url, "SHOPIFY_SHOP_DOMAIN": "test-shop.myshopify.com", **shop_env,
               "AMAZON_API_BASE_URL": amazon.base_url, "AMAZON_TOKEN_URL": amazon.base_url + LWA_PATH,
               "AMAZON_CREATORS_CREDENTIAL_ID": amazon.credential_id,
               "AMAZON_CREATORS_CREDENTIAL_SECRET": sentinels["amazon"], "AMAZON_CREATORS_VERSION": "3.1",
               "AMAZON_PARTNER_TAG": amazon.partner_tag, "AMAZON_SEARCH_KEYWORDS": "mug,lantern",
               "EBAY_API_BASE_URL": ebay.base_url, "EBAY_CLIENT_ID": ebay.client_id,
               "EBAY_CLIENT_SECRET": sentinels["ebay"], "EBAY_SEARCH_QUERIES": "steel mug",
               "PIPELINE_MAX_ATTEMPTS": "2", "PIPELINE_REQUEST_DEADLINE_SECONDS": "1"}

        def go(*args):
            result, record = run(None, *args, env=env)
            outputs.append(result.output)
            return result

        assert go("--verbose").exit_code == 0  # a good run: files, cache, state, run log
        # 1. Each sentinel really reached its sandbox.
        if minting:
            assert any(sentinels["shopify"] in e.get("body", "") for e in shop.log)  # the token request's form
            assert any(e["headers"].get("X-Shopify-Access-Token") in shop.oauth.tokens for e in shop.log)
        else:
            assert any(e["headers"].get("X-Shopify-Access-Token") == sentinels["shopify"] for e in shop.log)
        assert any(sentinels["amazon"] in e.get("body", "") for e in amazon.log)
        basic = base64.b64encode(f"{ebay.client_id}:{sentinels['ebay']}".encode()).decode()
        assert any(e["headers"].get("Authorization") == f"Basic {basic}" for e in ebay.log)
        minted = [*amazon.tokens, *ebay.tokens, *shop.oauth.tokens]
        assert minted and (shop.oauth.minted > 0) == minting
        # 2. Every error path.
        shop.inject(Fault("status", status=401, times=99, body={"errors": "[API] Invalid API key or access token"}))
        amazon.inject(Fault("status", status=500, times=99))
        ebay.inject(Fault("trickle", seconds=2, times=99))
        assert go("--verbose").exit_code == 1
        shop.faults.clear(), amazon.faults.clear(), ebay.faults.clear()
        amazon.expire_tokens(), ebay.expire_tokens(), shop.oauth.expire_all()
        bad = sorted(shop.products)[:30]
        for pid in bad:  # half the catalog breaks a rule: quarantine and a failed quality gate
            shop.products[pid] = {**shop.products[pid], "title": ""}
        shop._sorted = None
        go("--verbose", "--full-refresh")
        go("--verbose", "--dry-run", "--limit", "20")  # a development run: the cache is written
        shop.inject(Fault("redirect", times=99))
        go("--verbose", "--dry-run", "--no-cache")
        minted = [*amazon.tokens, *ebay.tokens, *shop.oauth.tokens, *minted]
    # 3. Search everything the pipeline wrote or printed.
    haystack = [("output", "\n".join(outputs).encode())]
    for root in dirs.values():
        for path in root.rglob("*"):
            if path.is_file():
                haystack.append((str(path), path.read_bytes()))
    assert any("tracebacks" in name for name, _ in haystack) and any("quarantine" in name for name, _ in haystack)
    assert any(name.endswith(".parquet") for name, _ in haystack) and any("http_cache" in name for name, _ in haystack)
    needles = [*sentinels.values(), *minted]
    hits = [(name, needle) for name, data in haystack for needle in needles for form in forms(needle) if form in data]
    print(f"searched {len(haystack)} files and outputs for {len(needles)} secrets in 3 forms: {len(hits)} hits")
    assert hits == []


def test_private_files_are_the_owners_alone(sandbox, run, dirs):
    sandbox.inject(Fault("status", status=401, times=1))
    run(sandbox)  # a failed run: traceback
    run(sandbox)  # a good run: state, Parquet
    run(sandbox, "--dry-run")  # a development run: the cache
    private = [p for p in [*dirs["logs"].rglob("*"), *dirs["cache"].rglob("*"), *(dirs["data"] / "state").rglob("*"),
                           *(dirs["data"] / ".locks").rglob("*")]]
    assert any("tracebacks" in str(p) for p in private)
    for path in private:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {mode:o}"
    for path in (dirs["data"] / "normalized").rglob("*.parquet"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_output_mode_is_configurable(sandbox, run, dirs):
    run(sandbox, env={"PIPELINE_OUTPUT_FILE_MODE": "0600"})
    assert {stat.S_IMODE(p.stat().st_mode) for p in (dirs["data"] / "normalized").rglob("*.parquet")} == {0o600}


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode, refused", [(0o644, True), (0o640, True), (0o604, True), (0o600, False), (0o400, False)])
def test_an_env_file_others_can_read_is_refused(sandbox, run, tmp_path, mode, refused):
    env_file = tmp_path / ".env"
    env_file.write_text("SHOPIFY_API_VERSION=2026-10\n")
    env_file.chmod(mode)
    result, _ = run(sandbox, "--env-file", str(env_file))
    assert (result.exit_code == 2) == refused, result.output
    if refused:
        assert "chmod 600" in result.output and str(env_file) in result.output


def test_an_error_worded_with_a_secret_is_redacted_in_the_run_log(sandbox, run, dirs, monkeypatch):
    """Libraries word their errors with what they were given (a URL, a header): the run log's
    `error` goes through the same redaction as the logs and tracebacks."""
    from connectors import shopify

    token = "shpat_test_not_a_real_token"
    signed = "https://storage.example/bulk/1.jsonl?X-Goog-Signature=abc123&X-Goog-Credential=xyz"

    def failing(*args, **kwargs):
        raise RuntimeError(f"could not reach {signed} with {token}")
        yield  # a generator, like the real one

    monkeypatch.setattr(shopify, "iter_records", failing)
    result, record = run(sandbox, "--providers", "shopify")
    error = record["providers"]["shopify"]["error"]
    assert result.exit_code == 1 and "could not reach" in error
    assert token not in error and "abc123" not in error and "xyz" not in error


def test_an_error_worded_with_the_client_secret_or_a_minted_token_is_redacted(cc_sandbox, run, dirs, monkeypatch):
    """A Dev Dashboard app's secret is masked by value (it is a setting), its minted tokens too
    (each is registered when minted): in the run log, the output and the traceback."""
    from connectors import shopify
    from tests.conftest import CLIENT_CREDENTIALS, CLIENT_SECRET

    real, used = shopify.iter_records, []

    def failing(http, shop, **kwargs):
        yield from islice(real(http, shop, **kwargs), 1)  # mints a token
        used.extend(cc_sandbox.oauth.tokens)
        raise RuntimeError(f"could not reuse {used[0]} minted with {CLIENT_SECRET}")

    monkeypatch.setattr(shopify, "iter_records", failing)
    result, record = run(cc_sandbox, "--providers", "shopify", env=CLIENT_CREDENTIALS)
    entry = record["providers"]["shopify"]
    assert result.exit_code == 1 and "could not reuse" in entry["error"] and used
    written = [entry["error"], result.output, Path(entry["traceback"]).read_text()]
    assert all(used[0] not in text and CLIENT_SECRET not in text for text in written)


def test_no_ebay_refresh_token_or_user_token_survives_any_error_path(run, dirs, clock, monkeypatch):
    """The seller's refresh token and the user tokens minted from it, through a good run, re-mints,
    a failing API, a development run's cache, an error worded with both, and a refused refresh
    token: then every byte written or printed is searched for each."""
    from connectors import ebay_orders
    from tests.test_ebay_orders import cached_answers

    refresh = f"sentinel-ebay-refresh-{secrets.token_hex(12)}"
    outputs, used = [], []
    with EbaySandbox(clock=clock, sellers={refresh: "seller"}, orders=30, token_lifetime_s=3,
                     revoke_tokens_every=3) as ebay:
        env = {"EBAY_API_BASE_URL": ebay.base_url, "EBAY_CLIENT_ID": ebay.client_id,
               "EBAY_CLIENT_SECRET": ebay.client_secret, "EBAY_REFRESH_TOKEN": refresh,
               "EBAY_SEARCH_QUERIES": "steel mug", "PIPELINE_STREAMS": "products,orders",
               "PIPELINE_MAX_ATTEMPTS": "2", "PIPELINE_REQUEST_DEADLINE_SECONDS": "1"}

        def go(*args):
            result, _ = run(None, *args, env=env)
            outputs.append(result.output)
            return result

        assert go("--verbose").exit_code == 0  # files, state, run log; user tokens re-minted on 401
        # 1. The refresh token went to the token endpoint and user tokens to getOrders.
        grants = [e for e in ebay.log if e.get("kind") == "user_token"]
        assert grants and all(refresh in unquote(e["body"]) for e in grants)
        bearers = {e["headers"].get("Authorization", "")[len("Bearer "):] for e in ebay.log
                   if e["path"] == "/sell/fulfillment/v1/order"}
        assert ebay.user_minted >= 2 and bearers & set(ebay.user_tokens)
        # 2. Every error path.
        ebay.inject(Fault("status", status=500, times=99))
        assert go("--verbose", "--streams", "orders", "--full-refresh").exit_code == 1
        ebay.faults.clear()
        go("--verbose", "--dry-run", "--limit", "5")  # a development run: the cache is written
        real = ebay_orders.iter_records

        def failing(http, settings, **kwargs):
            yield from islice(real(http, settings, **kwargs), 1)  # mints a user token
            used.extend(ebay.user_tokens)
            raise RuntimeError(f"could not use {used[-1]} minted from {refresh}")

        monkeypatch.setattr(ebay_orders, "iter_records", failing)
        assert go("--verbose", "--streams", "orders", "--full-refresh").exit_code == 1
        monkeypatch.setattr(ebay_orders, "iter_records", real)
        ebay.revoke(refresh)
        refused = go("--verbose", "--streams", "orders", "--full-refresh")
        assert refused.exit_code == 1 and "must consent again" in refused.output
        minted = [*ebay.user_tokens, *used]
    haystack = [("output", "\n".join(outputs).encode()), *(("cache", body) for body in cached_answers(dirs["cache"]))]
    for root in dirs.values():
        haystack += [(str(path), path.read_bytes()) for path in root.rglob("*") if path.is_file()]
    assert any("tracebacks" in name for name, _ in haystack) and any(name.endswith(".parquet") for name, _ in haystack)
    assert any("could not use ***" in data.decode("utf-8", "replace") for _, data in haystack)  # redacted, not dropped
    needles = [refresh, *minted]
    hits = [(name, needle) for name, data in haystack for needle in needles for form in forms(needle) if form in data]
    print(f"searched {len(haystack)} files and outputs for {len(needles)} secrets in 3 forms: {len(hits)} hits")
    assert hits == []


def test_no_aws_sentinel_survives_an_object_store_run_or_its_errors(run, dirs, sandbox, lake, monkeypatch):
    """Temporary AWS credentials (an ASIA key id, a secret key, a session token) made at run time: a
    good run into the bucket, a store that refuses every write, then a read; then every
    output, local file and object in the bucket is searched for them."""
    s3, bucket, _ = lake
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    key_id = "ASIA" + "".join(secrets.choice(alphabet) for _ in range(16))
    aws = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)[:40],
           "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2Vj" + secrets.token_urlsafe(90)}
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    destination = ["--destination", f"s3://{bucket}/lake", "--table-format", "delta"]
    outputs = []
    result, _ = run(sandbox, *destination, "--verbose")
    outputs.append(result.output)
    assert result.exit_code == 0, result.output
    assert {e["key_id"] for e in s3.log()} == {key_id}  # boto3 and delta-rs both signed with the sentinel
    s3.inject(kind="status", status=403, code="AccessDenied", method="PUT", times=99)
    result, _ = run(sandbox, *destination, "--verbose")  # every write is refused: the probe says so
    outputs.append(result.output)
    assert result.exit_code == 1 and "cannot take this run" in result.output
    s3.clear_faults()
    s3.inject(kind="status", status=403, code="AccessDenied", method="GET", path="manifest", times=99)
    result, _ = run(sandbox, *destination, "--verbose")  # the unit fails reading its state
    outputs.append(result.output)
    assert result.exit_code == 1 and "traceback in" in result.output
    s3.clear_faults()
    haystack = [("output", "\n".join(outputs).encode())]
    haystack += [(str(p), p.read_bytes()) for root in dirs.values() if root.exists() for p in root.rglob("*") if p.is_file()]
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            haystack.append((item["Key"], client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()))
    assert any("_history/runs/" in name for name, _ in haystack) and any("tracebacks" in name for name, _ in haystack)
    hits = [(name, label) for name, data in haystack for label, needle in aws.items() for form in forms(needle)
            if form in data]
    assert hits == []
