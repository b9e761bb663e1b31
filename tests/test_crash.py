"""Crash safety: SIGKILL at named points and at random moments; each time a clean rerun must
leave exactly the dataset one clean run produces, and readers never see a broken file.

CRASH_KILLS sets how many random kills (default 3 here; `make crash-test` runs 30).
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from storage.crash import POINTS
from tests.procs import base_env, content, dataset_problems, read_runlog, run_cli, shopify_env, start_cli

TOKEN = "shpat_crash_test_token"


@pytest.fixture(scope="module")
def server():
    with ShopifySandbox(CatalogSpec(size=300), token=TOKEN, throttle=False) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def golden(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    completed = run_cli(base_env(root, **shopify_env(server, TOKEN), PIPELINE_ROWS_PER_FILE="100"))
    assert completed.returncode == 0, completed.stderr
    rows = content(root)
    assert len(rows) == 300
    return rows


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_each_named_point_then_a_clean_rerun(server, golden, tmp_path, point):
    env = base_env(tmp_path, **shopify_env(server, TOKEN), PIPELINE_ROWS_PER_FILE="100")
    crashed = run_cli({**env, "PIPELINE_CRASH_AT": point})
    assert crashed.returncode == -signal.SIGKILL, f"{point} was not reached: {crashed.stderr[-500:]}"
    assert dataset_problems(tmp_path) == []  # what readers see right after the crash
    rerun = run_cli(env)
    assert rerun.returncode == 0, rerun.stderr
    assert dataset_problems(tmp_path) == []
    assert content(tmp_path) == golden
    assert not [p for p in (tmp_path / "data").rglob("*.tmp")]
    assert read_runlog(tmp_path)[-1]["status"] == "ok"


def test_random_kills_each_followed_by_a_clean_rerun(server, golden, tmp_path):
    kills = int(os.environ.get("CRASH_KILLS", "3"))
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    print(f"random kills: {kills}, seed: {seed}")
    rng = random.Random(seed)
    survived = 0
    for attempt in range(kills):
        root = tmp_path / f"kill{attempt}"
        env = base_env(root, **shopify_env(server, TOKEN), PIPELINE_ROWS_PER_FILE="100")
        if attempt % 2:  # half the kills land on a run that has earlier data to protect
            assert run_cli(env).returncode == 0
            server.mutate(0.05)
        process = start_cli(env)
        time.sleep(rng.uniform(0.2, 1.5))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert dataset_problems(root) == [], f"seed {seed}, attempt {attempt}"
        rerun = run_cli(env)
        assert rerun.returncode == 0, rerun.stderr
        assert dataset_problems(root) == [], f"seed {seed}, attempt {attempt}"
        expected = run_cli(base_env(root / "fresh", **shopify_env(server, TOKEN)))
        assert expected.returncode == 0
        latest = {(s, i): h for s, i, h in content(root)}
        assert {(s, i) for s, i, _ in content(root / "fresh")} == set(latest)
        assert {h for _, _, h in content(root / "fresh")} <= {h for _, _, h in content(root)}
        survived += 1
    assert survived == kills
