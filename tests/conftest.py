from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import responses
from click.testing import CliRunner

from pipelines.run_pipeline import Runtime, cli
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox

# `responses` answers in place of the one method that puts a request on the wire (connectors/transport.py:
# requests' HTTPAdapter.send is not called on the direct path), so the send hook, the deadline and
# the size cap run as they do in a run.
responses.mock.target = "connectors.transport.DeadlineAdapter.exchange"

TOKEN = "shpat_test_not_a_real_token"
SHOP = "test-shop.myshopify.com"
CLIENT_ID, CLIENT_SECRET = "test-client-id", "test-client-secret-not-real"
# A Dev Dashboard app instead of the static token: for `run(cc_sandbox, env=CLIENT_CREDENTIALS)`.
CLIENT_CREDENTIALS = {"SHOPIFY_ACCESS_TOKEN": None, "SHOPIFY_CLIENT_ID": CLIENT_ID, "SHOPIFY_CLIENT_SECRET": CLIENT_SECRET}
FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(provider: str, name: str):
    return json.loads((FIXTURES / provider / name).read_text())


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No real credentials or settings leak into a test from the machine's environment (AWS's
    included: no test may reach a real bucket, nor the instance metadata service)."""
    for name in list(os.environ):
        if name.startswith(("SHOPIFY_", "AMAZON_", "EBAY_", "PIPELINE_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIPELINE_ENV_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(scope="session")
def local_s3():
    """moto's S3 on loopback, behind the counting, fault-injecting proxy (sandbox/s3.py), in a
    process of its own; started once per session, a fresh bucket per test (see `lake`)."""
    from sandbox.s3 import LocalS3

    with LocalS3() as server:
        yield server


@pytest.fixture
def lake(local_s3, monkeypatch):
    """A fresh bucket; the AWS variables that reach it are set. Yields (server, bucket, env)."""
    bucket = local_s3.create_bucket()
    env = local_s3.env(bucket, "lake")
    for name, value in env.items():
        if name != "PIPELINE_DESTINATION":  # in-process runs name it: the `run` fixture passes --data-dir
            monkeypatch.setenv(name, value)
    local_s3.reset()
    yield local_s3, bucket, env
    local_s3.reset()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def sandbox():
    """A Shopify sandbox with a 100-product catalog and throttling off."""
    with ShopifySandbox(CatalogSpec(size=100), token=TOKEN, throttle=False) as server:
        yield server


@pytest.fixture
def cc_sandbox(clock):
    """A Shopify sandbox that knows only a Dev Dashboard app: tokens live 5 s on the test's clock."""
    with ShopifySandbox(CatalogSpec(size=100), token=None, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                        token_lifetime_s=5, throttle=False, clock=clock) as server:
        yield server


@pytest.fixture
def dirs(tmp_path):
    return {"data": tmp_path / "data", "logs": tmp_path / "logs", "cache": tmp_path / "cache"}


@pytest.fixture
def run(monkeypatch, dirs, clock):
    """Run the CLI in-process against a sandbox; returns (result, last run-log record)."""

    def invoke(server=None, *args, env: dict | None = None, runtime: Runtime | None = None):
        variables = {}
        if server is not None:
            variables = {"SHOPIFY_API_BASE_URL": server.base_url, "SHOPIFY_SHOP_DOMAIN": SHOP,
                         "SHOPIFY_ACCESS_TOKEN": TOKEN}
        variables.update(env or {})
        for name, value in variables.items():  # None unsets a variable
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        argv = ["--data-dir", str(dirs["data"]), "--logs-dir", str(dirs["logs"]),
                "--cache-dir", str(dirs["cache"]), *args]
        result = CliRunner().invoke(cli, argv, obj=runtime or Runtime(sleep=clock.sleep, clock=clock))
        log_file = dirs["logs"] / "runs.jsonl"
        record = json.loads(log_file.read_text().splitlines()[-1]) if log_file.exists() else None
        return result, record

    return invoke


def catalog_requests(server) -> list[dict]:
    """The Shopify sandbox's API requests but the destroyed products' own queries (a products run asks
    for their first page beside its own, and for any more on their own)."""
    return [e for e in server.api_requests() if "DestroyedProducts" not in (e.get("body") or "")]


def parquet_rows(data_dir: Path):
    import pyarrow.dataset as ds

    root = data_dir / "normalized" / "products"
    if not root.exists():
        return []
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pylist()
