"""Operating it: anomaly detection, the SQLite history, the metrics file, the report and the SLA check."""

from __future__ import annotations

import json
import sqlite3
import stat
from datetime import datetime, timedelta, timezone

import pytest

from pipelines import anomaly, metrics, report
from pipelines.anomaly import AnomalyRules
from storage import history_db, runlog
from storage.paths import UnitId

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
RULES = AnomalyRules(window=8, factor=3.0, floor=50)
EBAY = UnitId("ebay", "EBAY_US")
DEFAULTS = {"ebay": "EBAY_US"}  # lines from before units (these records) are the default account's runs


def record(i: int, fetched: int = 1000, written: int = 10, status: str = "ok", dry: bool = False,
           limited: bool = False, provider: str = "ebay", anomalies=()) -> dict:
    started = T0 + timedelta(hours=6 * i)
    return {"run_id": f"20261101T{i:06d}Z-abcdef", "started_at": started.isoformat(),
            "finished_at": (started + timedelta(seconds=30)).isoformat(), "duration_s": 30.0 + i,
            "status": status, "exit_code": 0, "dry_run": dry, "limited": limited,
            "providers": {provider: {"status": status, "fetched": fetched, "written": written, "duplicates": fetched - written,
                                     "quarantined": 0, "requests": 5}},
            "anomalies": list(anomalies)}


def history(n: int, **kw) -> list[dict]:
    return [record(i, **kw) for i in range(n)]


def test_cold_start_is_explicit_and_never_an_anomaly():
    verdict = anomaly.detect({"fetched": 0, "written": 99999}, history(7), EBAY, RULES, DEFAULTS)
    assert verdict == {"cold_start": True, "baseline_runs": 7, "anomalies": []}


def test_a_drop_in_fetched_including_to_zero_is_an_anomaly():
    for fetched in (0, 300):
        verdict = anomaly.detect({"fetched": fetched, "written": 0}, history(8), EBAY, RULES, DEFAULTS)
        assert [a["signal"] for a in verdict["anomalies"]] == ["fetched_drop"] and not verdict["cold_start"]
        assert verdict["anomalies"][0]["median"] == 1000
    assert anomaly.detect({"fetched": 400, "written": 0}, history(8), EBAY, RULES, DEFAULTS)["anomalies"] == []


def test_a_spike_in_written_is_an_anomaly_above_the_floor():
    spike = anomaly.detect({"fetched": 1000, "written": 31}, history(8), EBAY, RULES, DEFAULTS)
    assert spike["anomalies"] == []  # 3 x median 10 = 30, but under the floor of 50
    spike = anomaly.detect({"fetched": 1000, "written": 51}, history(8), EBAY, RULES, DEFAULTS)
    assert [a["signal"] for a in spike["anomalies"]] == ["written_spike"]


def test_a_zero_median_needs_the_floor_to_call_a_spike():
    quiet = history(8, written=0)
    assert anomaly.detect({"fetched": 1000, "written": 5}, quiet, EBAY, RULES, DEFAULTS)["anomalies"] == []
    assert anomaly.detect({"fetched": 1000, "written": 60}, quiet, EBAY, RULES, DEFAULTS)["anomalies"]


def test_dry_limited_and_failed_runs_never_count_toward_the_baseline():
    noisy = [*history(7), record(90, fetched=5, dry=True), record(91, fetched=5, limited=True),
             record(92, fetched=5, status="failed")]
    assert anomaly.detect({"fetched": 1000, "written": 10}, noisy, EBAY, RULES, DEFAULTS)["cold_start"] is True
    assert len(anomaly.baseline([*noisy, record(8)], EBAY, 8, DEFAULTS)) == 8


@pytest.mark.parametrize("flag, code", [((), 0), (("--fail-on-anomaly",), 4)])
def test_a_quiet_run_after_a_full_load_is_a_fetched_drop_logged_and_fatal_only_when_asked(sandbox, run, flag, code):
    env = {"PIPELINE_ANOMALY_WINDOW": "1"}
    result, first = run(sandbox, env=env)  # the full load: 100 fetched
    assert first["providers"]["shopify"]["cold_start"] is True and first["anomalies"] == []
    result, second = run(sandbox, *flag, env=env)  # incremental: only the overlap comes back
    assert second["providers"]["shopify"]["fetched"] < 100 / 3
    assert [a["signal"] for a in second["anomalies"]] == ["fetched_drop"]
    assert second["providers"]["shopify"]["anomalies"][0]["median"] == 100
    assert "ANOMALY shopify:test-shop.myshopify.com/products: fetched" in result.output
    assert result.exit_code == code and second["exit_code"] == code


def test_a_limited_or_dry_run_is_never_judged(sandbox, run):
    env = {"PIPELINE_ANOMALY_WINDOW": "1"}
    run(sandbox, env=env)
    for args in (("--dry-run",), ("--limit", "1")):
        result, rec = run(sandbox, "--fail-on-anomaly", *args, env=env)
        assert result.exit_code == 0 and rec["anomalies"] == []


def test_every_run_log_line_is_also_in_the_sqlite_history(sandbox, run, dirs):
    run(sandbox)
    run(sandbox, "--dry-run")
    lines = runlog.read(dirs["logs"])
    con = sqlite3.connect(history_db.history_path(dirs["logs"]))
    rows = con.execute("SELECT run_id, status, dry_run, record FROM runs ORDER BY started_at").fetchall()
    assert [r[0] for r in rows] == [line["run_id"] for line in lines]
    assert json.loads(rows[0][3]) == lines[0] and rows[1][2] == 1
    provider = con.execute("SELECT provider, status, written FROM provider_runs WHERE run_id = ?", (rows[0][0],)).fetchall()
    assert ("shopify", "ok", 100) in provider and ("amazon", "skipped", 0) in provider
    assert stat.S_IMODE(history_db.history_path(dirs["logs"]).stat().st_mode) == 0o600


def test_a_failing_history_sink_is_reported_but_never_fails_the_run(sandbox, run, dirs, monkeypatch):
    def broken(*args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(history_db, "write", broken)
    result, record_ = run(sandbox)
    assert result.exit_code == 0 and record_["status"] == "ok"
    assert "run history: could not write" in result.output and "disk I/O error" in result.output


def test_metrics_file_is_written_atomically_in_textfile_format(sandbox, run, dirs, tmp_path):
    prom = tmp_path / "collector" / "products_pipeline.prom"
    result, rec = run(sandbox, env={"PIPELINE_METRICS_FILE": str(prom)})
    text = prom.read_text()
    labels = 'provider="shopify",account="test-shop.myshopify.com",stream="products"'
    assert f'products_pipeline_provider_written{{{labels}}} 100' in text
    assert "products_pipeline_last_run_exit_code 0" in text
    assert f'products_pipeline_provider_last_success_timestamp_seconds{{{labels}}}' in text
    assert "# TYPE products_pipeline_last_run_duration_seconds gauge" in text
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    assert [p.name for p in prom.parent.iterdir()] == ["products_pipeline.prom"]  # no staging file left
    for line in text.splitlines():  # every sample line parses: name{labels} value
        if not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            float(value)


def test_metrics_render_escapes_labels():
    rec = {**record(1), "record_version": 2,
           "units": [{"provider": "ebay", "account": 'we"ird\\p', "stream": "products", "status": "ok"}]}
    assert 'account="we\\"ird\\\\p"' in metrics.render(rec, {})


def test_report_table_shows_statuses_counts_and_anomalies():
    runs = [*history(3), record(3, written=900, anomalies=[{"provider": "ebay", "signal": "written_spike",
                                                             "value": 900, "median": 10, "threshold": 50}]),
            record(4, status="failed")]
    text = report.table(runs)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["run", "status", "time"] and "ebay new/dup/quar" in lines[0]
    assert "900/100/0" in lines[4] and "ebay written_spike" in lines[4]
    assert "failed" in lines[5]


def test_html_report_is_self_contained_and_marks_anomalies():
    runs = [*history(9), record(9, fetched=0, written=0, anomalies=[{"provider": "ebay", "signal": "fetched_drop",
                                                                     "value": 0, "median": 1000, "threshold": 333.3}])]
    page = report.html_report(runs, generated=T0)
    assert page.count("<svg") == 3 and page.count('class="anomaly"') == 1
    assert "<script" not in page and "http://" not in page.replace("http://www.w3", "") and "https://" not in page
    assert "fetched_drop" in page


@pytest.mark.parametrize("ages, max_age, stale", [
    ([1], "12h", set()), ([13], "12h", {"ebay"}), ([], "12h", {"ebay"}), ([30, 2], "1d", set())])
def test_sla_check_flags_providers_whose_last_good_run_is_too_old(ages, max_age, stale):
    now = T0 + timedelta(days=10)
    runs = [{**record(0), "finished_at": (now - timedelta(hours=h)).isoformat()} for h in ages]
    runs.append({**record(1, status="failed"), "finished_at": now.isoformat()})  # failures never count as fresh
    found = report.stale_units(runs, [EBAY], report.parse_duration(max_age), now, DEFAULTS)
    assert {unit.provider for unit in found} == stale


def test_report_command_exits_5_when_stale_and_0_when_fresh(sandbox, run, dirs):
    run(sandbox)
    result, _ = run(sandbox, "report", "--max-age", "1h")
    assert result.exit_code == 0 and "Fresh" in result.output
    line = runlog.read(dirs["logs"])[0]
    old = {**line, "run_id": "old", "finished_at": (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()}
    (dirs["logs"] / "runs.jsonl").write_text(json.dumps(old) + "\n")
    result, _ = run(sandbox, "report", "--max-age", "36h")
    assert result.exit_code == 5 and "STALE shopify" in result.output


@pytest.mark.parametrize("text, seconds", [("36h", 129600), ("90m", 5400), ("2d", 172800), ("1h30m", 5400)])
def test_durations(text, seconds):
    assert report.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["soon", "12", "h12", ""])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        report.parse_duration(text)
