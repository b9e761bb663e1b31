"""A run that cannot record itself: a full disk (a real one: a small tmpfs, and /dev/full) says so
in one sentence, keeps its record on stderr, exits 74, and the next run after freeing space commits
normally, records itself and duplicates nothing."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.run_pipeline import Runtime, cli
from storage.lock import FileLease
from storage.paths import UnitId, lock_path
from tests.conftest import SHOP, TOKEN
from tests.procs import base_env, dataset_problems, run_cli, shopify_env


@pytest.fixture
def full_fs(tmp_path):
    """A 256 KiB tmpfs filled to the last byte; yields (mount point, free()), unmounted after."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here ({done.stderr.strip()}); these tests need root"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI runs as root: this test must run there, never be skipped
        pytest.skip(message)
    filler = mount / "filler"
    try:
        with open(filler, "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    try:
        yield mount, lambda: filler.unlink()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _json_lines(text: str) -> list[dict]:
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_a_full_logs_disk_exits_74_with_the_record_on_stderr_and_a_rerun_recovers(sandbox, tmp_path, full_fs):
    mount, free = full_fs
    env = {**base_env(tmp_path), "PIPELINE_LOGS_DIR": str(mount / "logs"), **shopify_env(sandbox, TOKEN)}
    first = run_cli(env)
    assert first.returncode == 74, first.stderr
    assert "Traceback" not in first.stderr
    assert f"appending to the run log {mount / 'logs' / 'runs.jsonl'} failed" in first.stderr
    assert "No space left on device" in first.stderr
    assert f"shopify:{SHOP}/products: ok, fetched 100, wrote 100" in first.stderr  # the per-provider summary still comes
    assert "run history: could not write" in first.stderr  # the SQLite history: a warning only
    [record] = _json_lines(first.stderr)
    assert record["exit_code"] == 74 and record["providers"]["shopify"]["written"] == 100
    assert "No space left on device" in record["record_error"]
    assert TOKEN not in first.stderr + first.stdout
    assert dataset_problems(tmp_path) == []

    free()
    second = run_cli(env)
    assert second.returncode == 0, second.stderr
    lines = [json.loads(x) for x in (mount / "logs" / "runs.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["run_id"] != record["run_id"]
    assert lines[0]["providers"]["shopify"]["written"] == 0  # the first run's data was committed
    assert dataset_problems(tmp_path) == []
    rows = sum(1 for _ in (tmp_path / "data" / "normalized").rglob("*.parquet"))
    assert rows >= 1


def test_74_wins_over_a_failed_provider_and_a_traceback_that_cannot_be_written(tmp_path, full_fs, sandbox):
    mount, _ = full_fs
    env = {**base_env(tmp_path), "PIPELINE_LOGS_DIR": str(mount / "logs"),
           **shopify_env(sandbox, "shpat_test_wrong_token")}
    done = run_cli(env)
    assert done.returncode == 74, done.stderr
    assert "Traceback" not in done.stderr
    assert f"shopify:{SHOP}/products: FAILED" in done.stderr and "could not write a traceback under" in done.stderr
    [record] = _json_lines(done.stderr)
    entry = record["providers"]["shopify"]
    assert entry["status"] == "failed" and "No space left on device" in entry["traceback_error"]
    assert "traceback" not in entry  # no file was written, so no path is claimed


def test_a_metrics_file_on_a_full_disk_is_a_warning_and_the_exit_code_stays(sandbox, run, dirs, full_fs):
    mount, _ = full_fs
    result, record = run(sandbox, env={"PIPELINE_METRICS_FILE": str(mount / "pipeline.prom")})
    assert result.exit_code == 0 and record["exit_code"] == 0
    assert "metrics: could not write" in result.output


def test_a_run_log_on_dev_full_exits_74(sandbox, dirs, clock, monkeypatch):
    dirs["logs"].mkdir(parents=True)
    (dirs["logs"] / "runs.jsonl").symlink_to("/dev/full")
    for name, value in {"SHOPIFY_API_BASE_URL": sandbox.base_url, "SHOPIFY_SHOP_DOMAIN": SHOP,
                        "SHOPIFY_ACCESS_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["--data-dir", str(dirs["data"]), "--logs-dir", str(dirs["logs"]),
                                      "--providers", "shopify"], obj=Runtime(sleep=clock.sleep, clock=clock))
    assert result.exit_code == 74, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [record] = _json_lines(result.stderr)
    assert record["providers"]["shopify"]["written"] == 100 and record["exit_code"] == 74


def test_every_selected_provider_locked_stays_75_even_when_the_record_cannot_be_written(sandbox, dirs, clock,
                                                                                       monkeypatch):
    dirs["logs"].mkdir(parents=True)
    (dirs["logs"] / "runs.jsonl").symlink_to("/dev/full")
    lock = FileLease(lock_path(dirs["data"], UnitId("shopify", SHOP)))
    assert lock.acquire()
    try:
        for name, value in {"SHOPIFY_API_BASE_URL": sandbox.base_url, "SHOPIFY_SHOP_DOMAIN": SHOP,
                            "SHOPIFY_ACCESS_TOKEN": TOKEN}.items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(cli, ["--data-dir", str(dirs["data"]), "--logs-dir", str(dirs["logs"]),
                                          "--providers", "shopify"], obj=Runtime(sleep=clock.sleep, clock=clock))
    finally:
        lock.release()
    assert result.exit_code == 75
    [record] = _json_lines(result.stderr)
    assert record["exit_code"] == 75 and "record_error" in record


def test_a_tracebacks_folder_that_cannot_be_written_is_named_in_the_summary_and_the_run_log(run, dirs, sandbox):
    dirs["logs"].mkdir(parents=True)
    (dirs["logs"] / "tracebacks").write_text("a file where the folder should be")
    result, record = run(sandbox, env={"SHOPIFY_ACCESS_TOKEN": "shpat_test_wrong_token"})
    assert result.exit_code == 1
    assert "could not write a traceback under" in result.output
    assert "could not write a traceback under" in record["providers"]["shopify"]["traceback_error"]
    assert Path(dirs["logs"] / "tracebacks").is_file()
