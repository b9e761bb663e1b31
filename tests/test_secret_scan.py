"""The pre-commit secret scanner catches the credentials this project handles."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCAN = [sys.executable, str(REPO / "tools" / "scan_secrets.py")]


def fake_credentials() -> dict:
    """Token-shaped strings made at run time, so none is ever committed."""
    return {"Shopify token": "shpat_" + secrets.token_hex(16),
            "eBay OAuth token": "v^1.1#i^1#" + secrets.token_urlsafe(30).replace("-", "x"),
            "AWS Access Key": "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))}


@pytest.mark.parametrize("kind", list(fake_credentials()))
def test_scanner_flags_each_kind_of_credential(tmp_path, kind):
    leak = tmp_path / "settings.py"
    leak.write_text(f'TOKEN = "{fake_credentials()[kind]}"\n')
    completed = subprocess.run([*SCAN, str(leak)], capture_output=True, text=True)
    assert completed.returncode == 1
    assert kind in completed.stdout and "settings.py:1" in completed.stdout


def test_scanner_passes_clean_files_and_the_repository(tmp_path):
    clean = tmp_path / "clean.py"
    clean.write_text('TOKEN = "shpat_test_not_a_real_token"\nHASH = "%s"\n' % secrets.token_hex(32))
    assert subprocess.run([*SCAN, str(clean)], capture_output=True).returncode == 0
    tracked = subprocess.run(SCAN, cwd=REPO, capture_output=True, text=True)
    assert tracked.returncode == 0, tracked.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_pre_commit_refuses_a_dotenv_file_and_a_token(tmp_path):
    pre_commit = Path(sys.executable).with_name("pre-commit")
    assert subprocess.run([str(pre_commit), "validate-config", str(REPO / ".pre-commit-config.yaml")]).returncode == 0
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(REPO / ".pre-commit-config.yaml", tmp_path)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    wrapper = tmp_path / ".venv" / "bin" / "python"  # the hook's interpreter: this test's venv
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    (tmp_path / "tools").mkdir()
    for name in ("scan_secrets.py", "secret_patterns.py"):
        shutil.copy(REPO / "tools" / name, tmp_path / "tools")
    (tmp_path / ".env").write_text("SHOPIFY_ACCESS_TOKEN=x\n")
    (tmp_path / "app.py").write_text(f'TOKEN = "{fake_credentials()["Shopify token"]}"\n')
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    env_only = subprocess.run([str(pre_commit), "run", "no-env-file", "--files", ".env"], cwd=tmp_path,
                              capture_output=True, text=True)
    assert env_only.returncode == 1 and "must never be committed" in env_only.stdout
    token = subprocess.run([str(pre_commit), "run", "scan-secrets", "--files", "app.py"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert token.returncode == 1 and "Shopify token" in token.stdout
