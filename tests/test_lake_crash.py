"""Crash safety in an object store: SIGKILL a run into an S3 Delta table at each named point and at
random moments; right after, the table is readable with no duplicate; once the dead run's (short)
lease has expired the rerun takes it over, recovers, completes, and the table equals a clean run's.
And the store's own faults: retried when they pass, nothing half-visible when they do not.

Every scenario has a bucket (and, for random kills, a shop) of its own and runs at the same time as
the others, so the lease expiries are waited for once. LAKE_CRASH_KILLS sets the random kills (3
here; `make lake-crash-test` runs 20).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from click.testing import CliRunner

from pipelines.run_pipeline import Runtime, cli
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from storage.crash import DELTA_POINTS
from storage.paths import UnitId, lease_name, manifest_name
from tests.conftest import parquet_rows as parquet_dataset
from tests.lakes import duplicates, keys, parquet_rows, table_rows
from tests.lakes import wait_for_expiry as wait_until_expired
from tests.procs import base_env, run_cli, shopify_env, start_cli

TOKEN = "shpat_lake_crash_token"
UNIT = UnitId("shopify", "test-shop.myshopify.com")
LEASE_SECONDS = 1
SIZE = 60
DATA_FILE, COMMIT, MANIFEST = r"/normalized/products/source(=|%3D)[^?]*\.parquet", r"/_delta_log/0*[1-9]\d*\.json", r"/manifest\.json"
# name -> (table format, crash point or None, proxy fault or None)
SCENARIOS = {
    "during the upload of a data file": ("delta", None, {"kind": "stall", "method": "PUT", "path": DATA_FILE}),
    "before the Delta commit": ("delta", "before_delta_commit", None),
    "during the Delta commit, not made": ("delta", None, {"kind": "stall", "method": "PUT", "path": COMMIT}),
    "during the Delta commit, made but unanswered": ("delta", None, {"kind": "stall_after", "method": "PUT", "path": COMMIT}),
    "between data and state": ("delta", "between_data_and_state", None),
    "after the state, before the lease is released": ("delta", None, {"kind": "stall_after", "method": "PUT",
                                                                       "path": MANIFEST}),
    "during the upload of a Parquet file": ("parquet", None, {"kind": "stall", "method": "PUT", "path": DATA_FILE}),
}
assert {point for _, point, _ in SCENARIOS.values() if point} == set(DELTA_POINTS)


@pytest.fixture(scope="module")
def shop():
    with ShopifySandbox(CatalogSpec(size=SIZE), token=TOKEN, throttle=False) as server:
        yield server


def rows(s3, bucket: str, fmt: str) -> list[dict]:
    columns = ["account", "source", "source_id", "raw_hash"]
    if fmt == "delta" and not keys(s3, bucket, "lake/normalized/products/_delta_log/"):
        return []
    return (table_rows if fmt == "delta" else parquet_rows)(s3, bucket, columns=columns) \
        if keys(s3, bucket, "lake/normalized/") else []


def content(found: list[dict]) -> set[tuple]:
    return {(r["source"], r["source_id"], r["raw_hash"]) for r in found}


def lake_env(root, s3, bucket: str, server, fmt: str, **extra) -> dict:
    return base_env(root, **shopify_env(server, TOKEN), **s3.env(bucket, "lake"), PIPELINE_TABLE_FORMAT=fmt,
                    PIPELINE_LEASE_SECONDS=str(LEASE_SECONDS), **extra)


def wait_for_expiry(s3, buckets: list[str]) -> None:
    for bucket in buckets:
        wait_until_expired(s3, bucket, f"lake/{lease_name(UNIT)}", LEASE_SECONDS)


def wait_for_stall(s3, bucket: str, deadline_s: float = 60) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if any(e["status"] == "stalled" and e["path"].startswith(f"/{bucket}/") for e in s3.log()):
            return True
        time.sleep(0.05)
    return False


def in_process(monkeypatch, root, server, *args) -> str:
    """A run in this process (no interpreter to start: the reruns, and the clean runs the killed
    ones are compared with); returns its output."""
    for name, value in {**shopify_env(server, TOKEN), "PIPELINE_LEASE_SECONDS": str(LEASE_SECONDS)}.items():
        monkeypatch.setenv(name, value)
    argv = ["--data-dir", str(root / "data"), "--logs-dir", str(root / "logs"), "--cache-dir", str(root / "cache"), *args]
    result = CliRunner().invoke(cli, argv, obj=Runtime())
    assert result.exit_code == 0, result.output
    return result.output


def into(bucket: str, fmt: str = "delta") -> tuple[str, ...]:
    return "--destination", f"s3://{bucket}/lake", "--table-format", fmt


def test_a_kill_at_each_named_point_then_a_rerun_leaves_the_clean_dataset(shop, local_s3, tmp_path, monkeypatch):
    in_process(monkeypatch, tmp_path / "golden", shop)  # what one clean run writes
    golden = content(parquet_dataset(tmp_path / "golden" / "data"))
    assert len(golden) == SIZE
    local_s3.reset()
    started = {}
    for index, (name, (fmt, point, fault)) in enumerate(SCENARIOS.items()):
        bucket = local_s3.create_bucket()
        if fault:
            local_s3.inject(**{**fault, "path": f"^/{bucket}/.*{fault['path']}", "seconds": 60})
        env = lake_env(tmp_path / f"s{index}", local_s3, bucket, shop, fmt)
        started[name] = (bucket, fmt, env, start_cli({**env, **({"PIPELINE_CRASH_AT": point} if point else {})}))
    for name, (bucket, fmt, env, process) in started.items():
        if SCENARIOS[name][1] is None:
            assert wait_for_stall(local_s3, bucket), f"{name}: the run never reached the stalled request"
            process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=120) == -signal.SIGKILL, f"{name}: {process.stderr.read()[-800:]}"
        process.stderr.close(), process.stdout.close()
        assert duplicates(rows(local_s3, bucket, fmt)) == 0, name  # what readers see right after the kill
    local_s3.clear_faults()
    wait_for_expiry(local_s3, [bucket for bucket, *_ in started.values()])
    for name, value in local_s3.env().items():
        monkeypatch.setenv(name, value)
    for index, (name, (bucket, fmt, _, _)) in enumerate(started.items()):
        err = in_process(monkeypatch, tmp_path / f"rerun{index}", shop, *into(bucket, fmt))
        assert "took over the lease" in err, name
        found = rows(local_s3, bucket, fmt)
        assert duplicates(found) == 0 and content(found) == golden, name
        assert not keys(local_s3, bucket, f"lake/{lease_name(UNIT)}"), name
        committed_before_the_kill = name in ("between data and state", "during the Delta commit, made but unanswered")
        assert (f"{SIZE} rows were adopted" in err) == committed_before_the_kill, f"{name}: {err}"


def test_random_kills_each_followed_by_a_clean_rerun(local_s3, tmp_path, monkeypatch):
    kills = int(os.environ.get("LAKE_CRASH_KILLS", "3"))
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    print(f"random kills: {kills}, seed: {seed}")
    rng = random.Random(seed)
    local_s3.reset()
    for name, value in local_s3.env().items():
        monkeypatch.setenv(name, value)
    for batch in range(0, kills, 4):  # four at a time: one expiry wait per batch
        cases = []
        for attempt in range(batch, min(kills, batch + 4)):
            server = ShopifySandbox(CatalogSpec(size=SIZE, seed=attempt), token=TOKEN, throttle=False).start()
            bucket = local_s3.create_bucket()
            if attempt % 2:  # half the kills land on a run that has earlier data to protect
                in_process(monkeypatch, tmp_path / f"first{attempt}", server, *into(bucket))
                server.mutate(0.1)
            env = lake_env(tmp_path / f"k{attempt}", local_s3, bucket, server, "delta")
            cases.append((attempt, server, bucket, env, start_cli(env), rng.uniform(0.5, 3.0)))
        begun = time.monotonic()
        for attempt, server, bucket, env, process, after in sorted(cases, key=lambda c: c[-1]):
            time.sleep(max(0.0, begun + after - time.monotonic()))
            process.send_signal(signal.SIGKILL)
            process.communicate()
            assert duplicates(rows(local_s3, bucket, "delta")) == 0, f"seed {seed}, attempt {attempt}"
        wait_for_expiry(local_s3, [c[2] for c in cases])
        for attempt, server, bucket, env, _, _ in cases:
            in_process(monkeypatch, tmp_path / f"rerun{attempt}", server, *into(bucket))
            in_process(monkeypatch, tmp_path / f"fresh{attempt}", server)  # what one clean run writes
            clean = parquet_dataset(tmp_path / f"fresh{attempt}" / "data")
            ours = rows(local_s3, bucket, "delta")
            assert duplicates(ours) == 0, f"seed {seed}, attempt {attempt}"
            assert {(r["source"], r["source_id"]) for r in ours} == {(r["source"], r["source_id"]) for r in clean}
            assert content(clean) <= content(ours), f"seed {seed}, attempt {attempt}"  # every current version is in
            server.stop()


# -- the store's own faults ------------------------------------------------------------------------
def test_slowdowns_server_errors_and_a_reset_mid_upload_are_retried(shop, lake, tmp_path, monkeypatch):
    s3, bucket, _ = lake
    for fault in ({"kind": "status", "status": 503, "code": "SlowDown", "method": "PUT", "path": DATA_FILE},
                  {"kind": "reset", "method": "PUT", "path": DATA_FILE},
                  {"kind": "status", "status": 500, "code": "InternalError", "method": "PUT", "path": MANIFEST},
                  {"kind": "reset", "method": "PUT", "path": r"/index/"},
                  {"kind": "status", "status": 503, "code": "SlowDown", "method": "PUT", "path": r"/_leases/"}):
        s3.inject(**fault)
    in_process(monkeypatch, tmp_path, shop, *into(bucket))
    statuses = [e["status"] for e in s3.log()]
    assert statuses.count(503) == 2 and statuses.count(500) == 1 and statuses.count(0) == 2  # each fault was met
    found = rows(s3, bucket, "delta")
    assert len(found) == SIZE and duplicates(found) == 0


def test_a_refused_delta_commit_leaves_nothing_half_visible(shop, lake, tmp_path, monkeypatch):
    s3, bucket, _ = lake
    s3.inject(kind="status", status=403, code="AccessDenied", method="PUT", path=COMMIT, times=99)
    for name, value in {**shopify_env(shop, TOKEN), "PIPELINE_LEASE_SECONDS": str(LEASE_SECONDS)}.items():
        monkeypatch.setenv(name, value)
    argv = ["--data-dir", str(tmp_path / "data"), "--logs-dir", str(tmp_path / "logs"), *into(bucket)]
    failed = CliRunner().invoke(cli, argv, obj=Runtime())
    assert failed.exit_code == 1, failed.output
    assert rows(s3, bucket, "delta") == []  # the table exists, with no row
    manifest = json.loads(s3.client().get_object(Bucket=bucket, Key=f"lake/{manifest_name(UNIT)}")["Body"].read())
    assert manifest["runs"] == [] and "high_water_mark" not in manifest["meta"]  # only the learned page size
    assert not manifest["index"]["latest"]["shards"] and not keys(s3, bucket, "lake/_leases/")  # lease released
    s3.clear_faults()
    in_process(monkeypatch, tmp_path, shop, *into(bucket))  # at once: nothing to recover, nothing to wait for
    found = rows(s3, bucket, "delta")
    assert len(found) == SIZE and duplicates(found) == 0


def test_rows_committed_without_their_state_are_adopted_by_the_next_holder(shop, lake, tmp_path, monkeypatch):
    s3, bucket, _ = lake
    # The first manifest write (the learned page size, mid-run) goes through; the commit's is refused.
    s3.inject(kind="status", status=403, code="AccessDenied", method="PUT", path=MANIFEST, times=99, after=1)
    for name, value in {**shopify_env(shop, TOKEN), "PIPELINE_LEASE_SECONDS": str(LEASE_SECONDS)}.items():
        monkeypatch.setenv(name, value)
    argv = ["--data-dir", str(tmp_path / "data"), "--logs-dir", str(tmp_path / "logs"), *into(bucket)]
    failed = CliRunner().invoke(cli, argv, obj=Runtime())
    assert failed.exit_code == 1 and "committed its rows but not its state" in failed.output, failed.output
    assert len(rows(s3, bucket, "delta")) == SIZE
    s3.clear_faults()
    assert CliRunner().invoke(cli, argv, obj=Runtime()).exit_code == 75  # the lease was kept, marked committing
    wait_for_expiry(s3, [bucket])
    output = in_process(monkeypatch, tmp_path, shop, *into(bucket))
    assert f"{SIZE} rows were adopted" in output and "wrote 0" in output
    found = rows(s3, bucket, "delta")
    assert len(found) == SIZE and duplicates(found) == 0
