"""The helpers that keep records flowing: Prefetch (a worker thread, bounded chunks) and lean_gc."""

from __future__ import annotations

import threading

import pytest

from pipelines.stages import Prefetch


def test_every_record_arrives_in_order_across_chunk_boundaries():
    assert list(Prefetch(iter(range(1234)), depth=200, chunk=100)) == list(range(1234))
    assert list(Prefetch(iter([]), chunk=100)) == []


def test_a_connector_error_arrives_after_the_records_before_it():
    def records():
        yield from range(150)
        raise RuntimeError("page 3 failed")

    got = []
    with pytest.raises(RuntimeError, match="page 3 failed"):
        for record in Prefetch(records(), chunk=100):
            got.append(record)
    assert got == list(range(150))


def test_the_worker_runs_at_most_depth_records_ahead():
    produced = []

    def records():
        for i in range(10_000):
            produced.append(i)
            yield i

    prefetch = Prefetch(records(), depth=200, chunk=10)
    iterator = iter(prefetch)
    assert next(iterator) == 0
    for _ in range(5_000):  # until the worker has filled the queue (a few ms), not a fixed sleep
        if prefetch._queue.full():
            break
        threading.Event().wait(0.001)
    assert prefetch._queue.full()
    # the queue's 20 chunks, the chunk being handed over and the one being filled
    assert len(produced) <= 200 + 2 * 10
    prefetch.close()


def test_closing_early_stops_the_worker_and_closes_the_generator():
    closed = threading.Event()

    def records():
        try:
            for i in range(1_000_000):
                yield i
        finally:
            closed.set()

    prefetch = Prefetch(records(), depth=100, chunk=10)
    for i, _ in enumerate(prefetch):
        if i == 5:
            break
    prefetch.close()
    assert not prefetch._thread.is_alive()
    assert closed.is_set()


def test_the_gil_is_offered_often_while_the_worker_runs_and_the_interval_is_restored_after():
    import sys

    before = sys.getswitchinterval()
    seen = [sys.getswitchinterval() for _ in Prefetch(iter(range(3)), chunk=2)]
    assert seen == [Prefetch.SWITCH_INTERVAL_S] * 3
    assert sys.getswitchinterval() == before


def test_lean_gc_freezes_and_raises_the_threshold_only_while_it_lasts():
    import gc

    from pipelines.stages import lean_gc

    before = gc.get_threshold()
    with lean_gc(gen0_threshold=12_345):
        assert gc.get_threshold()[0] == 12_345
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("preset, expected", [(None, "system"), ("mimalloc", "mimalloc")])
def test_the_entrypoint_gives_arrow_the_system_allocator_unless_told_otherwise(preset, expected):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if preset:
        env["ARROW_DEFAULT_MEMORY_POOL"] = preset
    code = "import pipelines.run_pipeline, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected


def test_records_from_local_disk_are_pulled_by_the_consumer_itself():
    """Once the connector marks its records local (a downloaded bulk result), the worker hands the
    generator over: every record still arrives, in order, the rest pulled by the consuming thread."""
    from connectors.local import mark_local

    threads = []

    def records():
        for i in range(250):
            yield i, threading.current_thread().name
        mark_local()
        for i in range(250, 600):
            threads.append(threading.current_thread())
            yield i, threading.current_thread().name

    got = list(Prefetch(records(), depth=200, chunk=100))
    assert [i for i, _ in got] == list(range(600))
    assert {name for i, name in got if i <= 250} == {"prefetch"}  # 250: the record whose pull marked it
    assert set(threads[1:]) == {threading.current_thread()}


def test_an_error_after_the_hand_over_reaches_the_consumer():
    from connectors.local import mark_local

    def records():
        yield 1
        mark_local()
        yield 2
        raise RuntimeError("the file was cut short")

    got = []
    with pytest.raises(RuntimeError, match="cut short"):
        for record in Prefetch(records(), chunk=100):
            got.append(record)
    assert got == [1, 2]
