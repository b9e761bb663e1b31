"""The command line as a new user meets it: where options go, and what a broken .env says."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pipelines.run_pipeline import cli


def _history(logs_dir, run_id="20261101T000000Z-abcdef"):
    logs_dir.mkdir(parents=True)
    record = {"run_id": run_id, "started_at": "2026-11-01T00:00:00+00:00", "finished_at": "2026-11-01T00:01:00+00:00",
              "duration_s": 60, "status": "ok", "exit_code": 0, "dry_run": False, "limited": False,
              "providers": {"shopify": {"status": "ok", "fetched": 5, "written": 5}}, "anomalies": [],
              "errors": {"total": 0, "by_provider": {}}}
    (logs_dir / "runs.jsonl").write_text(json.dumps(record) + "\n")
    return run_id


def test_shared_options_are_accepted_after_the_subcommand(tmp_path):
    run_id = _history(tmp_path / "logs")
    after = CliRunner().invoke(cli, ["report", "--logs-dir", str(tmp_path / "logs")])
    before = CliRunner().invoke(cli, ["--logs-dir", str(tmp_path / "logs"), "report"])
    assert after.exit_code == 0, after.output
    assert run_id in after.output and after.output == before.output


def test_the_subcommands_spelling_wins_over_the_groups(tmp_path):
    run_id = _history(tmp_path / "mine")
    result = CliRunner().invoke(cli, ["--logs-dir", str(tmp_path / "other"), "report", "--logs-dir",
                                      str(tmp_path / "mine")])
    assert result.exit_code == 0 and run_id in result.output


def test_an_env_file_that_cannot_be_parsed_is_exit_2_naming_the_file_and_line(tmp_path, monkeypatch):
    env_file = tmp_path / "pipeline.env"
    env_file.write_text('SHOPIFY_SHOP_DOMAIN=acme.myshopify.com\nSHOPIFY_ACCESS_TOKEN="shpat_test_unclosed\n'
                        "PIPELINE_LOOKBACK_MINUTES=5\n")
    env_file.chmod(0o600)
    for args in (["--env-file", str(env_file), "--dry-run"], ["report", "--env-file", str(env_file)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert f"{env_file} line 2 cannot be parsed" in result.output
        assert "no provider is configured" not in result.output
        assert "shpat_test_unclosed" not in result.output
