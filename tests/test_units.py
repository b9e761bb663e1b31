"""Units of work: many accounts per provider from the accounts file, each with its own state, lock,
files and run-log entry; the upgrade from one account per provider keeps identity, state and data."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from pipelines.config import ConfigError, load_settings
from pipelines.run_pipeline import cli
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from storage.lock import FileLease
from storage.paths import UnitId, lock_path, state_path
from tests.conftest import SHOP, TOKEN, catalog_requests
from tests.procs import dataset_problems

EU_SHOP, EU_TOKEN = "eu-store.myshopify.com", "shpat_test_eu_store_token"
LEGACY = Path(__file__).parent / "fixtures" / "release_0_1"  # a dataset the release before units wrote


@pytest.fixture
def eu_shop():
    """A second shop with a catalog of its own (other seed, other size)."""
    with ShopifySandbox(CatalogSpec(size=40, seed=11), token=EU_TOKEN, throttle=False) as server:
        yield server


def accounts_file(tmp_path, text: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return path


def two_shops(tmp_path, sandbox, eu_shop, *, us_name: str | None = None) -> dict:
    name = f'name = "{us_name}"\n' if us_name else ""
    path = accounts_file(tmp_path, f"""
[[shopify]]
{name}shop_domain = "{SHOP}"
access_token = "env:US_TOKEN"
api_base_url = "{sandbox.base_url}"

[[shopify]]
shop_domain = "{EU_SHOP}"
access_token = "env:EU_TOKEN"
api_base_url = "{eu_shop.base_url}"
""")
    return {"PIPELINE_ACCOUNTS_FILE": str(path), "US_TOKEN": TOKEN, "EU_TOKEN": EU_TOKEN}


def rows(data_dir: Path) -> list[dict]:
    root = data_dir / "normalized" / "products"
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pylist() if root.exists() else []


def unit_entry(record: dict, account: str) -> dict:
    return next(u for u in record["units"] if u["account"] == account)


def test_two_shops_in_one_run_keep_separate_state_files_and_rows(run, dirs, sandbox, eu_shop, tmp_path):
    env = two_shops(tmp_path, sandbox, eu_shop)
    result, record = run(None, env=env)
    assert result.exit_code == 0, result.output
    assert record["record_version"] == 2
    assert [(u["provider"], u["account"], u["stream"], u["written"]) for u in record["units"]] == [
        ("shopify", SHOP, "products", 100), ("shopify", EU_SHOP, "products", 40)]
    assert record["providers"]["shopify"]["written"] == 140 and record["providers"]["shopify"]["units"] == 2
    for shop in (SHOP, EU_SHOP):
        assert state_path(dirs["data"], UnitId("shopify", shop)).exists()
        assert f"shopify:{shop}/products: ok" in result.output
    accounts = {r["account"] for r in rows(dirs["data"])}
    assert accounts == {SHOP, EU_SHOP}
    names = [p.name for p in (dirs["data"] / "normalized").rglob("*.parquet")]
    assert sorted(n.split("_")[0] for n in names) == sorted([EU_SHOP, SHOP])
    _, again = run(None, env=env)
    assert [u["written"] for u in again["units"]] == [0, 0]
    assert dataset_problems(dirs["data"].parent) == []


def test_an_account_name_is_the_account_column_and_names_its_files(run, dirs, sandbox, eu_shop, tmp_path):
    _, record = run(None, env=two_shops(tmp_path, sandbox, eu_shop, us_name="us-store"))
    assert unit_entry(record, "us-store")["written"] == 100
    assert {r["account"] for r in rows(dirs["data"])} == {"us-store", EU_SHOP}
    assert state_path(dirs["data"], UnitId("shopify", "us-store")).exists()


def test_an_unresolved_reference_fails_only_its_unit(run, dirs, sandbox, eu_shop, tmp_path):
    env = two_shops(tmp_path, sandbox, eu_shop)
    del env["EU_TOKEN"]
    result, record = run(None, env=env)
    assert result.exit_code == 1
    eu = unit_entry(record, EU_SHOP)
    assert eu["status"] == "failed" and "env:EU_TOKEN" in eu["error"] and EU_SHOP in eu["error"]
    assert unit_entry(record, SHOP)["written"] == 100
    assert eu_shop.api_requests() == []


def test_a_unit_can_be_chosen_by_provider_and_name_or_by_a_unique_name(run, sandbox, eu_shop, tmp_path):
    env = two_shops(tmp_path, sandbox, eu_shop, us_name="us-store")
    _, record = run(None, "--accounts", "shopify:us-store", env=env)
    assert [u["account"] for u in record["units"]] == ["us-store"]
    _, record = run(None, "--accounts", EU_SHOP, "--streams", "products", env=env)
    assert [u["account"] for u in record["units"]] == [EU_SHOP]


@pytest.mark.parametrize("spec, words", [("nope", ["no account 'nope'", "shopify:us-store"]),
                                         ("ebay:us-store", ["no account 'ebay:us-store'"])])
def test_an_unknown_account_is_exit_2_listing_the_choices(run, sandbox, eu_shop, tmp_path, spec, words):
    result, _ = run(None, "--accounts", spec, env=two_shops(tmp_path, sandbox, eu_shop, us_name="us-store"))
    assert result.exit_code == 2
    assert all(w in result.output for w in words), result.output


def test_a_name_two_providers_share_is_ambiguous(run, tmp_path, sandbox):
    path = accounts_file(tmp_path, f"""
[[shopify]]
name = "main"
shop_domain = "{SHOP}"
access_token = "env:US_TOKEN"
api_base_url = "{sandbox.base_url}"

[[ebay]]
name = "main"
client_id = "id"
client_secret = "env:EBAY_SECRET"
search_queries = ["mug"]
""")
    result, _ = run(None, "--accounts", "main", env={"PIPELINE_ACCOUNTS_FILE": str(path), "US_TOKEN": TOKEN,
                                                      "EBAY_SECRET": "s"})
    assert result.exit_code == 2 and "ambiguous" in result.output
    assert "shopify:main" in result.output and "ebay:main" in result.output


def _load(tmp_path, text: str, **env) -> object:
    path = accounts_file(tmp_path, text)
    return load_settings({"PIPELINE_ACCOUNTS_FILE": str(path), **env})


@pytest.mark.parametrize("text, words", [
    ("[[shopify]\n", ["not valid TOML"]),
    ("[[walmart]]\nname = 'x'\n", ["unknown provider [[walmart]]"]),
    ("[[shopify]]\nshop_domain = 'a.myshopify.com'\naccess_token = 'env:T'\ncolour = 'red'\n",
     ["unknown key 'colour'", "shopify account #1"]),
    ("[[shopify]]\nname = 'bad/name'\nshop_domain = 'a.myshopify.com'\naccess_token = 'env:T'\n", ["name must be"]),
    ("[[shopify]]\nname = 'A'\nshop_domain = 'a.myshopify.com'\naccess_token = 'env:T'\n"
     "[[shopify]]\nname = 'a'\nshop_domain = 'b.myshopify.com'\naccess_token = 'env:T'\n", ["two shopify accounts", "'a'"]),
    ("[[shopify]]\nshop_domain = 'a.myshopify.com'\naccess_token = 'env:T'\n"
     "[[shopify]]\nshop_domain = 'a.myshopify.com'\naccess_token = 'env:T'\n", ["both named 'a.myshopify.com'"]),
    ("[[shopify]]\nshop_domain = 'a.myshopify.com'\naccess_token = 'env:T'\nstreams = ['prices']\n", ["streams must"]),
    ("[[shopify]]\nname = 'x'\naccess_token = 'env:T'\n", ["shopify account 'x'", "missing shop_domain"]),
    ("[[shopify]]\nshop_domain = 'https://a.myshopify.com'\naccess_token = 'env:T'\n", ["shop_domain must be"]),
    ("[[ebay]]\nclient_id = 'id'\nclient_secret = 'env:S'\nsearch_queries = ['mug']\ndaily_call_budget = 'lots'\n",
     ["daily_call_budget must be a number"]),
])
def test_each_kind_of_malformed_accounts_file_names_the_file_the_account_and_the_key(tmp_path, text, words):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text, T="shpat_test_x", S="s")
    message = str(caught.value)
    assert str(tmp_path / "accounts.toml") in message
    assert all(w in message for w in words), message


@pytest.mark.parametrize("provider, key, extra", [
    ("shopify", "access_token", "shop_domain = 'a.myshopify.com'"),
    ("shopify", "client_secret", "shop_domain = 'a.myshopify.com'\nclient_id = 'id'"),
    ("amazon", "credential_secret", "credential_id = 'id'\nversion = '3.1'\npartner_tag = 't-20'\nasins = ['B0TESTMUG1']"),
    ("ebay", "client_secret", "client_id = 'id'\nsearch_queries = ['mug']"),
    ("ebay", "oauth_token", "search_queries = ['mug']"),
])
def test_a_literal_secret_in_the_accounts_file_is_refused_without_echoing_it(tmp_path, provider, key, extra):
    secret = "shpat_test_literal_secret_value_123"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, f"[[{provider}]]\n{extra}\n{key} = '{secret}'\n")
    assert key in str(caught.value) and "reference" in str(caught.value)
    assert secret not in str(caught.value)


def test_lists_take_a_toml_array_or_the_comma_separated_string(tmp_path):
    settings = _load(tmp_path, """
[[ebay]]
name = "de"
marketplace_id = "EBAY_DE"
client_id = "id"
client_secret = "env:S"
search_queries = ["steel mug", "camping lantern"]

[[ebay]]
client_id = "id"
client_secret = "env:S"
search_queries = "steel mug,camping lantern"
""", S="s")
    de, us = [a.settings for a in settings.accounts]
    assert de.queries == us.queries == ("steel mug", "camping lantern")
    assert (de.account, us.account) == ("de", "EBAY_US")
    assert de.calls_file == us.calls_file  # one keyset, one daily budget, whichever accounts use it


def test_with_an_accounts_file_the_provider_variables_are_ignored_with_one_warning(run, dirs, sandbox, eu_shop,
                                                                                tmp_path):
    env = {**two_shops(tmp_path, sandbox, eu_shop), "SHOPIFY_SHOP_DOMAIN": "other.myshopify.com",
           "SHOPIFY_ACCESS_TOKEN": "shpat_test_ignored", "EBAY_SEARCH_QUERIES": "mug"}
    result, record = run(None, env=env)
    assert result.exit_code == 0
    assert result.output.count("these variables are ignored") == 1
    assert "EBAY_SEARCH_QUERIES, SHOPIFY_ACCESS_TOKEN, SHOPIFY_SHOP_DOMAIN" in result.output
    assert [u["account"] for u in record["units"]] == [SHOP, EU_SHOP]


def test_an_account_moved_from_the_environment_into_the_file_keeps_its_state(run, dirs, sandbox, eu_shop, tmp_path):
    _, first = run(sandbox)  # the environment defines the one shop
    assert first["units"][0]["written"] == 100
    requests_before = len(catalog_requests(sandbox))
    _, moved = run(None, env=two_shops(tmp_path, sandbox, eu_shop))  # now from the file, no name
    assert unit_entry(moved, SHOP)["written"] == 0
    assert len(catalog_requests(sandbox)) - requests_before == 1  # the usual one-request rerun
    assert unit_entry(moved, EU_SHOP)["written"] == 40


def test_a_locked_unit_is_75_alone_while_another_unit_of_the_provider_writes(run, dirs, sandbox, eu_shop, tmp_path):
    env = two_shops(tmp_path, sandbox, eu_shop)
    lease = FileLease(lock_path(dirs["data"], UnitId("shopify", SHOP)))
    assert lease.acquire()
    try:
        locked, record = run(None, "--accounts", f"shopify:{SHOP}", env=env)
        assert locked.exit_code == 75 and record["units"][0]["status"] == "locked"
        other, record = run(None, "--accounts", EU_SHOP, env=env)
        assert other.exit_code == 0 and record["units"][0]["written"] == 40
        both, record = run(None, env=env)
        assert both.exit_code == 0  # not every unit was locked
        assert [u["status"] for u in record["units"]] == ["locked", "ok"]
        assert record["providers"]["shopify"]["status"] == "locked"
    finally:
        lease.release()
    assert sandbox.api_requests() == []


def test_recovery_never_touches_another_units_files(run, dirs, sandbox, eu_shop, tmp_path):
    env = two_shops(tmp_path, sandbox, eu_shop)
    _, record = run(None, env=env)
    folder = next((dirs["data"] / "normalized" / "products" / "source=shopify").iterdir())
    # The EU unit is mid-write in another process: its staging file, and a file of its run in flight.
    eu_staging = folder / f".{EU_SHOP}_20261201T000000Z-abcdef-0002.parquet.tmp"
    eu_inflight = folder / f"{EU_SHOP}_20261201T000000Z-abcdef-0001.parquet"
    eu_staging.write_bytes(b"half a row group")
    shutil.copy(next(folder.glob(f"{EU_SHOP}_*.parquet")), eu_inflight)
    us_staging = folder / f".{SHOP}_20261201T000000Z-fedcba-0001.parquet.tmp"  # the US unit's crash leftover
    us_staging.write_bytes(b"left by a crash")
    result, _ = run(None, "--accounts", f"shopify:{SHOP}", env=env)
    assert result.exit_code == 0
    assert not us_staging.exists()  # its own leftover is swept
    assert eu_staging.exists() and eu_inflight.exists()  # the other unit's files are not its business


def test_units_prints_one_json_line_per_unit_and_never_a_secret(tmp_path, sandbox, eu_shop, monkeypatch):
    env = two_shops(tmp_path, sandbox, eu_shop, us_name="us-store")
    del env["EU_TOKEN"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["units"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.splitlines()]
    assert [set(x) for x in lines] == [{"provider", "account", "stream", "ready", "reason"}] * 2
    assert lines[0] == {"provider": "shopify", "account": "us-store", "stream": "products", "ready": True,
                        "reason": None}
    assert lines[1]["ready"] is False and "env:EU_TOKEN" in lines[1]["reason"]
    assert TOKEN not in result.output and EU_TOKEN not in result.output


def _legacy(tmp_path) -> dict:
    """A copy of what the release before units left: data, state, run log, SQLite history."""
    root = tmp_path / "old"
    shutil.copytree(LEGACY, root)
    (root / "data" / "state" / "shopify.sqlite").chmod(0o600)
    return {"data": root / "data", "logs": root / "logs", "cache": root / "cache"}


def _invoke(dirs, *args, env: dict, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = ["--data-dir", str(dirs["data"]), "--logs-dir", str(dirs["logs"]), "--cache-dir", str(dirs["cache"]), *args]
    result = CliRunner().invoke(cli, argv)
    lines = (dirs["logs"] / "runs.jsonl").read_text().splitlines()
    return result, json.loads(lines[-1])


@pytest.fixture
def legacy_shop():
    with ShopifySandbox(CatalogSpec(size=60), token=TOKEN, throttle=False) as server:
        yield server


def _shop_env(server) -> dict:
    return {"SHOPIFY_API_BASE_URL": server.base_url, "SHOPIFY_SHOP_DOMAIN": SHOP, "SHOPIFY_ACCESS_TOKEN": TOKEN}


def test_a_dataset_written_by_the_release_before_units_upgrades_in_place(tmp_path, legacy_shop, monkeypatch):
    dirs = _legacy(tmp_path)
    before = sorted((r["source_id"], r["raw_hash"]) for r in rows(dirs["data"]))
    result, record = _invoke(dirs, env=_shop_env(legacy_shop), monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    assert record["units"][0]["written"] == 0 and len(catalog_requests(legacy_shop)) == 1
    assert not (dirs["data"] / "state" / "shopify.sqlite").exists()
    assert state_path(dirs["data"], UnitId("shopify", SHOP)).exists()
    _, full = _invoke(dirs, "--full-refresh", env={**_shop_env(legacy_shop), "SHOPIFY_BULK_MIN_PRODUCTS": "0"},
                      monkeypatch=monkeypatch)
    assert full["units"][0]["fetched"] == 60 and full["units"][0]["written"] == 0  # no product written twice
    changed = legacy_shop.mutate(0.05)
    _, after = _invoke(dirs, env=_shop_env(legacy_shop), monkeypatch=monkeypatch)
    assert after["units"][0]["written"] == len(changed)
    now = sorted((r["source_id"], r["raw_hash"]) for r in rows(dirs["data"]))
    assert set(before) <= set(now) and len(now) == len(before) + len(changed)  # none lost, none twice
    assert dataset_problems(dirs["data"].parent) == []


def test_version_1_history_is_read_as_the_default_units_baseline_and_freshness(tmp_path, legacy_shop, monkeypatch):
    dirs = _legacy(tmp_path)
    old = [json.loads(x) for x in (dirs["logs"] / "runs.jsonl").read_text().splitlines()]
    assert all("record_version" not in r for r in old) and len(old) == 3
    now = datetime.now(timezone.utc)
    for i, r in enumerate(old):  # recent, so that only the reading (not the age) is under test
        r["finished_at"] = (now - timedelta(hours=3 - i)).isoformat()
    (dirs["logs"] / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    fresh, _ = _invoke(dirs, "report", "--max-age", "6h", env=_shop_env(legacy_shop), monkeypatch=monkeypatch)
    assert fresh.exit_code == 0 and "Fresh" in fresh.output, fresh.output
    _, record = _invoke(dirs, env={**_shop_env(legacy_shop), "PIPELINE_ANOMALY_WINDOW": "3"},
                        monkeypatch=monkeypatch)
    assert record["units"][0]["cold_start"] is False  # the three runs from before units are its baseline
    import sqlite3

    con = sqlite3.connect(dirs["logs"] / "runs.sqlite")
    keys = con.execute("SELECT provider, account, stream FROM provider_runs WHERE provider = 'shopify' "
                       "ORDER BY run_id").fetchall()
    assert keys[:3] == [("shopify", None, "products")] * 3 and ("shopify", SHOP, "products") in keys



def test_the_example_accounts_file_is_valid(tmp_path):
    example = Path(__file__).resolve().parent.parent / "accounts.example.toml"
    names = ["SHOPIFY_EU_CLIENT_ID", "SHOPIFY_EU_CLIENT_SECRET", "SHOPIFY_US_TOKEN", "AMAZON_CREATORS_CREDENTIAL_ID",
             "AMAZON_CREATORS_CREDENTIAL_SECRET", "EBAY_CLIENT_ID", "EBAY_CLIENT_SECRET", "EBAY_REFRESH_TOKEN"]
    settings = load_settings({"PIPELINE_ACCOUNTS_FILE": str(example), **{n: "x" * 12 for n in names}})
    assert [str(u) for u in settings.units()] == [
        "shopify:eu-store.myshopify.com/products", "shopify:us-store/products", "amazon:www.amazon.com/products",
        "ebay:us/products", "ebay:us/orders", "ebay:de/products"]
    assert all(a.ready for a in settings.accounts)


def test_a_runner_that_kept_only_the_old_state_upgrades_it_for_the_accounts_default_unit(tmp_path, legacy_shop,
                                                                                          monkeypatch):
    """GitHub Actions keeps data/state in its cache and ships the Parquet elsewhere: the old state's
    files are not on the runner to name their account, so the provider's own account inherits it."""
    dirs = _legacy(tmp_path)
    shutil.rmtree(dirs["data"] / "normalized")
    result, record = _invoke(dirs, env=_shop_env(legacy_shop), monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    assert record["units"][0]["written"] == 0 and len(catalog_requests(legacy_shop)) == 1
    assert state_path(dirs["data"], UnitId("shopify", SHOP)).exists()
