"""`run_pipeline.py compact`: the small files of every run merged, the log checkpointed, what no
version needs vacuumed, all while units keep writing, and a Parquet destination left untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.run_pipeline import cli
from storage.compaction import compaction_lock, vacuum_retention
from storage.destination import LocalDestination
from tests.delta_writer import ROWS
from tests.lakes import duplicates, storage_options
from tests.procs import REPO, base_env, run_cli


def table_state(path: Path):
    """(rows, active files) of a local Delta table."""
    from deltalake import DeltaTable

    table = DeltaTable(str(path))
    return table.to_pyarrow_dataset().to_table(use_threads=False).to_pylist(), table.file_uris()


def compact(dirs, *args):
    return CliRunner().invoke(cli, ["compact", "--data-dir", str(dirs["data"]), "--logs-dir", str(dirs["logs"]),
                                    "--table-format", "delta", *args])


@pytest.fixture
def three_runs(run, dirs, sandbox):
    """A local Delta table after three runs: every unit partition holds three small files."""
    for fraction in (None, 0.2, 0.2):
        if fraction:
            sandbox.mutate(fraction)
        result, _ = run(sandbox, "--table-format", "delta")
        assert result.exit_code == 0, result.output
    return dirs["data"] / "normalized" / "products"


def test_compact_merges_each_units_small_files_and_every_row_stays(three_runs, dirs):
    rows, files = table_state(three_runs)
    assert len(files) == 3
    result = compact(dirs)
    assert result.exit_code == 0, result.output
    after, files_after = table_state(three_runs)
    assert len(files_after) == 1
    assert sorted(r["raw_hash"] for r in after) == sorted(r["raw_hash"] for r in rows) and duplicates(after) == 0
    assert "products: 3 files" in result.output and "-> 1 files" in result.output
    assert "3 compacted into 1 in 1 partitions" in result.output
    assert list((three_runs / "_delta_log").glob("*.checkpoint.parquet"))
    again = compact(dirs, "--quiet")
    assert again.exit_code == 0 and again.output == ""


def test_vacuum_removes_only_unreferenced_files_older_than_the_retention(three_runs, dirs):
    partition = next(three_runs.glob("source=*/account=*"))
    stale, fresh = partition / "part-killed-writer-old.parquet", partition / "part-writer-uploading-now.parquet"
    for orphan in (stale, fresh):
        orphan.write_bytes(b"PAR1 not committed by anyone")
    week_and_a_day = time.time() - 8 * 24 * 3600
    os.utime(stale, (week_and_a_day, week_and_a_day))
    result = compact(dirs)
    assert result.exit_code == 0, result.output
    assert not stale.exists() and fresh.exists()  # a file a running writer has not committed yet stays
    assert "vacuum removed 1 files unreferenced for over 168 h" in result.output
    rows, _ = table_state(three_runs)  # the three files compaction replaced stay for the readers of old versions
    assert len(list(partition.glob("part-*.parquet"))) == 3 + 1 + 1 and rows


def test_a_retention_shorter_than_a_day_is_refused_and_nothing_is_touched(three_runs, dirs):
    before = sorted(p.name for p in three_runs.rglob("*"))
    result = compact(dirs, "--retention-hours", "23")
    assert result.exit_code == 2
    assert "--retention-hours 23 is too short" in result.output and "at least 24" in result.output
    assert sorted(p.name for p in three_runs.rglob("*")) == before


@pytest.mark.parametrize("configured, requested, expected", [
    (None, 24, (24, False)),  # delta-rs's 7-day default would refuse: our floor of a day replaces it
    (None, 168, (168, True)),
    ("interval 30 days", 168, (720, True)),  # the table's own setting is a floor too
    ("interval 2 days", 168, (168, True)),
    ("interval 3 fortnights", 48, (48, True)),  # unreadable: delta-rs judges it
])
def test_the_longer_of_the_tables_retention_and_ours_is_used(configured, requested, expected):
    configuration = {"delta.deletedFileRetentionDuration": configured} if configured else {}
    assert vacuum_retention(configuration, requested) == expected


def test_a_parquet_destination_is_left_alone_with_the_reason(run, dirs, sandbox):
    assert run(sandbox)[0].exit_code == 0
    files = {p: p.stat().st_mtime_ns for p in (dirs["data"] / "normalized").rglob("*")}
    answer = CliRunner().invoke(cli, ["compact", "--data-dir", str(dirs["data"]), "--logs-dir", str(dirs["logs"])])
    assert answer.exit_code == 0
    assert "small files each run writes accumulate" in answer.output and "--table-format delta" in answer.output
    assert {p: p.stat().st_mtime_ns for p in (dirs["data"] / "normalized").rglob("*")} == files


def test_a_second_compaction_meanwhile_is_exit_75_and_touches_nothing(three_runs, dirs):
    lock = compaction_lock(LocalDestination(dirs["data"]), run_id="x", day="2026-12-01")
    assert lock.acquire()
    try:
        result = compact(dirs)
    finally:
        lock.release()
    assert result.exit_code == 75 and "Another compaction holds" in result.output
    assert len(table_state(three_runs)[1]) == 3


def test_compacting_while_units_write_loses_no_commit_and_exits_0_every_time(lake, tmp_path):
    """Three writer processes append one-commit runs to their own partitions of one table in the
    local S3 while compact runs again and again as its own process, as a scheduler would start it.
    Each writer commits every 0.2 s, as fast as a table takes commits from a fleet (about 4 a
    second, docs/scaling.md); flat out on two loaded cores they outran a partition's rewrite.
    `make compact-race-test` runs it again and again with the writers flat out
    (COMPACT_WRITER_PAUSE=0), as CI once ran it: commits can then lose all their retries, and each
    must still land once."""
    s3, bucket, env = lake
    from storage.delta import DeltaTables

    root, options, stop = f"s3://{bucket}/lake", storage_options(s3), tmp_path / "stop"
    DeltaTables(root, options).ensure("products")
    writer_env = {**os.environ, "DELTA_OPTIONS": json.dumps(options)}
    writers = [subprocess.Popen([sys.executable, "-m", "tests.delta_writer", root, f"shop-{i}", "4", str(stop),
                                 os.environ.get("COMPACT_WRITER_PAUSE", "0.2")],
                                cwd=REPO, env=writer_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(3)]
    cli_env = base_env(tmp_path, **env)
    runs = []
    try:
        while len(runs) < 3 or any(w.poll() is None for w in writers):
            if len(runs) >= 2:
                stop.touch()  # two compactions overlapped the writers: let them finish their minimum
            runs.append(run_cli(cli_env, "compact", "--destination", root, "--table-format", "delta", timeout=180))
        outputs = [w.communicate(timeout=180) for w in writers]
    finally:
        for w in writers:
            w.kill() if w.poll() is None else None
    assert [w.returncode for w in writers] == [0, 0, 0], [err[-500:] for _, err in outputs]
    assert [r.returncode for r in runs] == [0] * len(runs), [r.stderr[-500:] for r in runs]
    last = run_cli(cli_env, "compact", "--destination", root, "--table-format", "delta")
    assert last.returncode == 0 and "-> 3 files" in last.stdout, last.stdout + last.stderr
    committed = {run_id for out, _ in outputs for run_id in out.split()}
    from deltalake import DeltaTable

    table = DeltaTable(f"{root}/normalized/products", storage_options=options)
    rows = table.to_pyarrow_dataset().to_table(columns=["account", "run_id", "raw_hash"], use_threads=False).to_pylist()
    assert len(rows) == ROWS * len(committed) and duplicates(rows) == 0  # every row of every commit, once
    assert {r["run_id"] for r in rows} == committed
    writes = [h["pipeline.run_id"] for h in table.history() if h["operation"] == "WRITE" and "pipeline.run_id" in h]
    assert sorted(writes) == sorted(committed)  # no commit lost, none made twice
    assert any("compacted into" in r.stdout and " 0 compacted" not in r.stdout for r in runs)


class LosingCommits:
    """write_deltalake that raises delta-rs's CommitFailedError for the first `losses` calls, after
    writing the commit anyway on those listed in `landed` (a commit whose answer was lost)."""

    def __init__(self, losses: int, landed: tuple[int, ...] = ()):
        import deltalake

        self.real, self.losses, self.landed, self.calls = deltalake.write_deltalake, losses, landed, 0

    def __call__(self, *args, **kwargs):
        from deltalake.exceptions import CommitFailedError

        self.calls += 1
        if self.calls > self.losses or self.calls in self.landed:
            self.real(*args, **kwargs)
        if self.calls <= self.losses:
            raise CommitFailedError("Failed to commit transaction: 100")


@pytest.mark.parametrize("losses, landed, calls", [(1, (), 2), (3, (), 4), (2, (2,), 2)])
def test_an_append_that_lost_its_commit_is_written_again_and_lands_once(tmp_path, monkeypatch, losses, landed, calls):
    import deltalake

    from storage.delta import DeltaTables
    from storage.paths import UnitId
    from tests.delta_writer import rows

    monkeypatch.setattr("storage.delta.APPEND_PAUSE_S", 0.0)
    tables, unit = DeltaTables(str(tmp_path)), UnitId("shopify", "shop-a")
    tables.ensure("products")
    losing = LosingCommits(losses, landed)
    monkeypatch.setattr(deltalake, "write_deltalake", losing)
    files = tables.append(lambda: rows("shop-a", "R1"), unit, "R1")
    assert losing.calls == calls
    found, active = table_state(tmp_path / "normalized" / "products")
    assert sorted(r["source_id"] for r in found) == [f"R1/{k}" for k in range(ROWS)]
    assert len(files) == 1 and str(tmp_path / files[0]) in {uri.removeprefix("file://") for uri in active}


def test_an_append_that_loses_every_attempt_raises_and_commits_nothing(tmp_path, monkeypatch):
    import deltalake
    from deltalake.exceptions import CommitFailedError

    from storage.delta import APPEND_ATTEMPTS, DeltaTables
    from storage.paths import UnitId
    from tests.delta_writer import rows

    monkeypatch.setattr("storage.delta.APPEND_PAUSE_S", 0.0)
    tables = DeltaTables(str(tmp_path))
    tables.ensure("products")
    losing = LosingCommits(APPEND_ATTEMPTS)
    monkeypatch.setattr(deltalake, "write_deltalake", losing)
    said = f"lost the race to commit {APPEND_ATTEMPTS} times.*the next run fetches it again"
    with pytest.raises(CommitFailedError, match=said):
        tables.append(lambda: rows("shop-a", "R1"), UnitId("shopify", "shop-a"), "R1")
    assert losing.calls == APPEND_ATTEMPTS
    assert table_state(tmp_path / "normalized" / "products")[0] == []


def test_a_compaction_step_that_lost_its_commit_is_tried_again_from_a_fresh_snapshot(monkeypatch):
    from deltalake.exceptions import CommitFailedError

    from storage import compaction

    class Table:
        refreshed = 0

        def update_incremental(self):
            self.refreshed += 1

    def step():
        outcomes.pop(0)()
        return "compacted"

    def lose():
        raise CommitFailedError("Failed to commit transaction: 15")

    monkeypatch.setattr(compaction, "RETRY_PAUSE_S", (0.0, 0.0))
    dt, report = Table(), compaction.TableReport("products")
    outcomes = [lose, lose, lambda: None]
    assert compaction._retrying(dt, step, report, "shopify/shop-a") == "compacted"
    assert report.retried == ["shopify/shop-a"] * 2 and dt.refreshed == 2
    outcomes = [lose] * compaction.COMPACT_ATTEMPTS
    with pytest.raises(CommitFailedError):
        compaction._retrying(dt, step, report, "vacuum")
    assert outcomes == [] and report.retried.count("vacuum") == compaction.COMPACT_ATTEMPTS - 1
