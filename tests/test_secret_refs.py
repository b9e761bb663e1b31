"""Secret references: env:, file: and aws-sm: (against moto's Secrets Manager on loopback). Each
kind resolves, and each way it cannot resolve fails its unit with a sentence naming the reference,
never the value."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest
from botocore.stub import Stubber

from pipelines.secret_refs import Resolver, UnresolvedReference
from tests.aws import DUMMY, moto_server
from tests.conftest import SHOP, TOKEN
from tests.procs import REPO

SECRET = "shpat_test_secret_from_a_reference_0042"


@pytest.fixture(scope="module")
def aws():
    """moto's Secrets Manager with three secrets; yields the variables a run needs to reach it."""
    with moto_server() as endpoint:
        env = {**DUMMY, "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint}
        client = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=DUMMY["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=DUMMY["AWS_SECRET_ACCESS_KEY"])
        client.create_secret(Name="prod/shopify-token", SecretString=SECRET)
        client.create_secret(Name="prod/ebay", SecretString=json.dumps({"client_secret": "ebay-secret-from-sm-77",
                                                                        "count": 3}))
        client.create_secret(Name="prod/binary", SecretBinary=b"\x00\x01")
        yield env


def secret_file(tmp_path, content: str, mode: int):
    path = tmp_path / "secret"
    path.write_text(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o644, 0o444])  # 0644: Kubernetes' default; 0444: Docker's
def test_a_file_reference_is_the_files_content_less_one_trailing_newline(tmp_path, mode):
    path = secret_file(tmp_path, SECRET + "\n\n", mode)
    assert Resolver({}).resolve(f"file:{path}") == SECRET + "\n"
    path.chmod(0o600)
    path.write_text(SECRET)
    assert Resolver({}).resolve(f"file:{path}") == SECRET


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620])
def test_a_file_others_can_write_is_refused_naming_it(tmp_path, mode):
    path = secret_file(tmp_path, SECRET, mode)
    with pytest.raises(UnresolvedReference) as caught:
        Resolver({}).resolve(f"file:{path}")
    assert str(path) in str(caught.value) and "others can write" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_missing_unreadable_or_empty_file_is_refused_naming_it(tmp_path):
    for target, words in ((tmp_path / "nope", "does not exist"), (tmp_path, "folder"),
                          (secret_file(tmp_path, "\n", 0o600), "empty")):
        with pytest.raises(UnresolvedReference) as caught:
            Resolver({}).resolve(f"file:{target}")
        assert f"file:{target}" in str(caught.value) and words in str(caught.value)


def test_an_env_reference_to_an_unset_variable_names_it():
    with pytest.raises(UnresolvedReference) as caught:
        Resolver({"OTHER": "x"}).resolve("env:SHOPIFY_US_TOKEN")
    assert "env:SHOPIFY_US_TOKEN" in str(caught.value) and "not set" in str(caught.value)


def test_secrets_manager_references_resolve_a_string_and_a_json_key_each_fetched_once(aws, monkeypatch):
    resolver = Resolver(aws)
    assert resolver.resolve("aws-sm:prod/shopify-token") == SECRET
    calls = []
    original = resolver._sm().get_secret_value
    monkeypatch.setattr(resolver._sm(), "get_secret_value", lambda **kw: calls.append(kw) or original(**kw))
    assert resolver.resolve("aws-sm:prod/ebay#client_secret") == "ebay-secret-from-sm-77"
    assert resolver.resolve("aws-sm:prod/ebay#client_secret") == "ebay-secret-from-sm-77"
    assert resolver.resolve("aws-sm:prod/shopify-token") == SECRET
    assert calls == [{"SecretId": "prod/ebay"}]  # once per secret per run


@pytest.mark.parametrize("reference, words", [
    ("aws-sm:prod/missing", ["aws-sm:prod/missing", "no such secret"]),
    ("aws-sm:prod/ebay#refresh_token", ["no key 'refresh_token'", "client_secret"]),
    ("aws-sm:prod/ebay#count", ["no key 'count' with a text value"]),
    ("aws-sm:prod/shopify-token#key", ["not a JSON object"]),
    ("aws-sm:prod/binary", ["binary or empty"]),
    ("aws-sm:", ["names no secret"]),
])
def test_secrets_manager_references_that_cannot_resolve_say_why(aws, reference, words):
    with pytest.raises(UnresolvedReference) as caught:
        Resolver(aws).resolve(reference)
    assert all(w in str(caught.value) for w in words), str(caught.value)
    assert SECRET not in str(caught.value) and "ebay-secret-from-sm-77" not in str(caught.value)


def test_access_denied_by_secrets_manager_names_the_permission(aws):
    resolver = Resolver(aws)
    with Stubber(resolver._sm()) as stub:
        stub.add_client_error("get_secret_value", service_error_code="AccessDeniedException", http_status_code=400)
        with pytest.raises(UnresolvedReference) as caught:
            resolver.resolve("aws-sm:prod/shopify-token")
    assert "access was denied" in str(caught.value) and "secretsmanager:GetSecretValue" in str(caught.value)


def test_secrets_manager_down_is_a_failure_after_its_retries_not_a_success():
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens
    with pytest.raises(UnresolvedReference) as caught:
        Resolver({**DUMMY, "AWS_ENDPOINT_URL_SECRETS_MANAGER": closed}).resolve("aws-sm:prod/shopify-token")
    assert "did not answer after its retries" in str(caught.value)


def test_secrets_manager_never_follows_the_object_stores_endpoint(aws):
    """AWS_ENDPOINT_URL (the S3 store's, for MinIO or R2) must not send secret lookups there."""
    env = {**aws, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"}
    assert Resolver(env).resolve("aws-sm:prod/shopify-token") == SECRET


def test_provider_variables_and_the_accounts_file_take_references_and_a_bad_one_fails_only_its_unit(
        run, dirs, sandbox, tmp_path, aws):
    token_file = secret_file(tmp_path, TOKEN + "\n", 0o600)
    result, record = run(sandbox, env={"SHOPIFY_ACCESS_TOKEN": f"file:{token_file}"})
    assert result.exit_code == 0 and record["units"][0]["written"] == 100
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(f"""
[[shopify]]
shop_domain = "{SHOP}"
access_token = "file:{token_file}"
api_base_url = "{sandbox.base_url}"

[[shopify]]
name = "second"
shop_domain = "second.myshopify.com"
access_token = "aws-sm:prod/does-not-exist"
api_base_url = "{sandbox.base_url}"
""")
    result, record = run(None, env={"PIPELINE_ACCOUNTS_FILE": str(accounts), **aws})
    assert result.exit_code == 1  # a secrets outage or a bad reference must not look like success
    first, second = record["units"]
    assert first["status"] == "ok" and second["status"] == "failed"
    assert "aws-sm:prod/does-not-exist" in second["error"] and "'second'" in second["error"]


def test_secrets_from_files_and_secrets_manager_appear_in_no_output_log_cache_or_data(run, dirs, sandbox, tmp_path,
                                                                                     aws):
    from sandbox.ebay import EbaySandbox

    token_file = secret_file(tmp_path, TOKEN, 0o400)
    with EbaySandbox(client_secret="ebay-secret-from-sm-77", requests_per_second=100) as ebay:
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(f"""
[[shopify]]
shop_domain = "{SHOP}"
access_token = "file:{token_file}"
api_base_url = "{sandbox.base_url}"

[[ebay]]
client_id = "{ebay.client_id}"
client_secret = "aws-sm:prod/ebay#client_secret"
search_queries = ["steel mug"]
api_base_url = "{ebay.base_url}"
requests_per_second = 100
""")
        env = {"PIPELINE_ACCOUNTS_FILE": str(accounts), **aws}
        outputs = [run(None, env=env)[0].output, run(None, "--dry-run", "--limit", "5", env=env)[0].output]
    found = []
    for secret in (TOKEN, "ebay-secret-from-sm-77", DUMMY["AWS_SECRET_ACCESS_KEY"]):
        found += [f"output {i}" for i, text in enumerate(outputs) if secret in text]
        for folder in dirs.values():
            for path in folder.rglob("*") if folder.exists() else ():
                if path.is_file() and secret.encode() in path.read_bytes():
                    found.append(str(path))
    assert found == []
    assert "ebay:EBAY_US/products: ok" in outputs[0]


def test_a_run_without_aws_sm_references_never_imports_boto3(tmp_path, sandbox):
    code = ("import sys; from pipelines.config import load_settings; "
            f"load_settings({{'SHOPIFY_SHOP_DOMAIN': '{SHOP}', 'SHOPIFY_ACCESS_TOKEN': 'file:{tmp_path}/t'}}); "
            "import pipelines.run_pipeline; print('boto3' in sys.modules)")
    (tmp_path / "t").write_text(TOKEN)
    (tmp_path / "t").chmod(0o600)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PIPELINE_ACCOUNTS_FILE": ""})
    assert done.stdout.strip() == "False", done.stderr
