"""A long paged crawl normalized by a worker process (pipelines/paging_split.py): the same rows and
quarantine as one process, in the same dedup state; a worker's death fails the unit with nothing
committed; a short crawl, a limited run or one process asked for never starts a worker."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from normalize import shopify as shopify_normalizer
from pipelines import bulk_split, paging_split, run as run_module, stages
from pipelines.streams import STREAMS, stream_of
from storage.paths import UnitId
from storage.state import ProviderState, state_path
from tests.conftest import SHOP, TOKEN
from tests.test_bulk_split import all_rows, quarantined

SIZE = 900
BATCH = 100  # nine batches: two here, then the worker


@pytest.fixture
def rich():
    from sandbox.catalog import CatalogSpec
    from sandbox.shopify import ShopifySandbox

    with ShopifySandbox(CatalogSpec(size=SIZE, rich=True), token=TOKEN, throttle=False) as server:
        pid = next(iter(server.products))  # one product breaks a rule (a negative price): quarantined
        server.products[pid] = {**server.products[pid], "priceRangeV2": {
            "minVariantPrice": {"amount": "-1.00", "currencyCode": "USD"},
            "maxVariantPrice": {"amount": "-1.00", "currencyCode": "USD"}}}
        server._sorted = None
        yield server


@pytest.fixture
def worker_batches(monkeypatch) -> list:
    """Small batches, two workers allowed, a worker ready as soon as it is started (so which
    batches it takes does not depend on this machine's speed); returns each batch's size it took."""
    monkeypatch.setenv("PIPELINE_BULK_WORKERS", "2")
    monkeypatch.setattr(stages, "CORES", 2)
    monkeypatch.setattr(run_module, "BATCH_SIZE", BATCH)
    sent = []
    real_send = paging_split.PagingWorker.send

    def ready_at_once(self):
        if not self.ready:
            assert self._outbox.poll(60), "the worker did not start within a minute"
        return paging_split.PagingWorker.is_ready.__wrapped__(self)

    def send(self, raws, fetched_at):
        sent.append(len(raws))
        return real_send(self, raws, fetched_at)

    ready_at_once.__wrapped__ = paging_split.PagingWorker.is_ready
    monkeypatch.setattr(paging_split.PagingWorker, "is_ready", ready_at_once)
    monkeypatch.setattr(paging_split.PagingWorker, "send", send)
    return sent


def test_a_worker_writes_exactly_the_rows_quarantine_and_state_of_one_process(rich, run, dirs, tmp_path,
                                                                              worker_batches):
    result, record = run(rich, env={"PIPELINE_BULK_WORKERS": "1", "SHOPIFY_BULK_MIN_PRODUCTS": "0"})
    assert result.exit_code == 0, result.output
    assert worker_batches == []
    one, one_quarantined = all_rows(dirs["data"]), quarantined(dirs["data"])
    one_mark = record["providers"]["shopify"]["high_water_mark"]
    dirs["data"].rename(tmp_path / "one-process")

    result, record = run(rich, env={"PIPELINE_BULK_WORKERS": "2"})
    assert result.exit_code == 0, result.output
    assert worker_batches == [BATCH] * (SIZE // BATCH - stages.PAGING_WORKER_AFTER)
    assert len(one) == SIZE - 1 and all_rows(dirs["data"]) == one  # every column, raw_hash included
    assert len(one_quarantined) == 1 and quarantined(dirs["data"]) == one_quarantined
    entry = record["providers"]["shopify"]
    assert (entry["fetched"], entry["written"], entry["quarantined"]) == (SIZE, SIZE - 1, 1)
    assert entry["high_water_mark"] == one_mark  # the greatest cursor, from the worker's batches too
    # The worker's batches went into the dedup state: read again whole, nothing is new.
    result, record = run(rich, "--full-refresh")
    entry = record["providers"]["shopify"]
    assert result.exit_code == 0, result.output
    assert (entry["written"], entry["duplicates"]) == (0, SIZE - 1)


def test_a_dying_worker_fails_the_unit_with_nothing_committed(rich, run, dirs, worker_batches):
    result, record = run(rich, env={"PIPELINE_CRASH_AT": "in_paging_worker"})
    assert result.exit_code == 1, result.output
    entry = record["providers"]["shopify"]
    assert entry["status"] == "failed" and entry["error_type"] == "WorkerFailed"
    assert "paging-worker ended without finishing the crawl's batches" in entry["error"]
    assert "the next run reads the crawl again (PIPELINE_BULK_WORKERS=1" in entry["error"]  # what to do
    assert not list((dirs["data"] / "normalized").rglob("*.parquet"))
    state = ProviderState.open(state_path(dirs["data"], UnitId("shopify", SHOP)))
    try:
        assert state.latest_count() == 0 and state.get("high_water_mark") is None
    finally:
        state.close()
    result, record = run(rich, env={"PIPELINE_CRASH_AT": None})
    assert result.exit_code == 0, result.output
    assert record["providers"]["shopify"]["written"] == SIZE - 1


@pytest.mark.parametrize("args, env", [
    ((), {"PIPELINE_BULK_WORKERS": "1"}),  # one process asked for
    (("--limit", str(SIZE)), {}),  # a limited run fetches no page ahead and splits nothing
])
def test_no_worker_when_one_process_is_asked_for_or_the_run_is_limited(rich, run, dirs, worker_batches, args, env,
                                                                       monkeypatch):
    started = []
    monkeypatch.setattr(paging_split, "PagingWorker", lambda job: started.append(job))
    result, record = run(rich, *args, env=env)
    assert result.exit_code == 0, result.output
    assert started == [] and record["providers"]["shopify"]["written"] == SIZE - 1


def test_a_short_crawl_never_starts_a_worker(run, dirs, worker_batches, monkeypatch):
    from sandbox.catalog import CatalogSpec
    from sandbox.shopify import ShopifySandbox

    started = []
    monkeypatch.setattr(paging_split, "PagingWorker", lambda job: started.append(job))
    with ShopifySandbox(CatalogSpec(size=BATCH * stages.PAGING_WORKER_AFTER, rich=True), token=TOKEN,
                        throttle=False) as server:
        result, record = run(server)
    assert result.exit_code == 0, result.output
    assert started == [] and record["providers"]["shopify"]["written"] == BATCH * stages.PAGING_WORKER_AFTER


def broken_cursor(raw):
    raise RuntimeError("no cursor today")


def test_a_worker_that_raises_fails_with_its_error():
    job = bulk_split.Job(shopify_normalizer.to_product, ("shopify", 1), broken_cursor, ("products",), SHOP, "r", None)
    worker = paging_split.PagingWorker(job)
    try:
        assert worker._outbox.poll(60) and worker.is_ready()
        with pytest.raises(bulk_split.WorkerFailed, match="RuntimeError: no cursor today"):
            for n in range(paging_split.DEPTH + 2):
                raws = [{"id": f"gid://shopify/Product/{n}", "title": "P", "variants": []}]
                list(worker.send(raws, datetime(2026, 12, 1, tzinfo=timezone.utc)))
            list(worker.drain())
    finally:
        worker.close()
    assert not worker.proc.is_alive()


def test_every_value_json_can_carry_reaches_the_worker_as_it_was():
    """NaN, a 30-digit integer, a lone surrogate, -0.0: what `json.loads` makes and orjson would not
    write back as it was; and an object no JSON makes goes by pickle."""
    seen, batches = [], []
    job = bulk_split.Job(shopify_normalizer.to_product, ("shopify", 1), repr, ("products",), SHOP, "r", None)
    worker = paging_split.PagingWorker(job)
    try:
        assert worker._outbox.poll(60) and worker.is_ready()
        for value in (float("nan"), 10**30, "\ud800", -0.0, {"nested": [1.5, None, True]}, datetime(2026, 1, 1)):
            raws = [{"id": "gid://shopify/Product/1", "value": value}]
            batches += worker.send(raws, datetime(2026, 12, 1, tzinfo=timezone.utc))
            seen.append(raws)
        batches += worker.drain()
    finally:
        worker.close()
    assert [batch.cursor for batch in batches] == [repr(raws[0]) for raws in seen]  # the worker's repr of each


def test_a_worker_that_dies_before_it_is_ready_leaves_the_batches_to_this_process(rich, run, dirs, worker_batches):
    result, record = run(rich, env={"PIPELINE_CRASH_AT": "paging_worker_start"})
    assert result.exit_code == 0, result.output
    assert worker_batches == [] and record["providers"]["shopify"]["written"] == SIZE - 1


# A script standing in for the entrypoint: what it runs when a spawned child runs it again is seen.
SCRIPT = '''
import sys
sys.path.insert(0, {repo!r})
if __name__ == "__mp_main__":  # spawn running this script again in the worker
    open({marker!r}, "w").close()
from datetime import datetime, timezone
from connectors import shopify
from normalize.shopify import to_product
from pipelines import bulk_split, paging_split

if __name__ == "__main__":
    job = bulk_split.Job(to_product, ("shopify", 1), shopify.record_cursor, ("products",), "shop", "r",
                         datetime(2026, 12, 1, tzinfo=timezone.utc))
    worker = paging_split.PagingWorker(job)
    try:
        assert worker._outbox.poll(60) and worker.is_ready()
        sent = [{{"id": "gid://shopify/Product/1", "title": "P", "updatedAt": "2026-11-30T00:00:00Z", "variants": []}}]
        batches = list(worker.send(sent, datetime(2026, 12, 1, tzinfo=timezone.utc))) + list(worker.drain())
    finally:
        worker.close()
    print(batches[0].cursor[1], __file__ == {script!r}, "requests" in sys.modules)
'''


def test_a_worker_starts_without_the_entrypoint_run_again(tmp_path):
    """spawn runs the parent's main script again in a child; a worker needs nothing of it (its target
    and job import by name)."""
    repo, marker, script = str(Path(__file__).resolve().parent.parent), tmp_path / "ran", tmp_path / "entry.py"
    script.write_text(SCRIPT.format(repo=repo, marker=str(marker), script=str(script)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True", "True"]  # the worker's cursor; this process's own __file__ is back
    assert not marker.exists()


def test_no_stream_s_cursor_a_worker_unpickles_brings_an_http_library():
    code = ("import pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3', 'connectors')))")
    for provider, stream in STREAMS:
        cursor = stream_of(provider, stream).connector.record_cursor
        done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(cursor), capture_output=True,
                              timeout=60, cwd=Path(__file__).resolve().parent.parent)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().strip() == "['connectors', 'connectors.cursors']", (provider, stream)
