"""Run history for people: a terminal table, a self-contained HTML report, and the SLA check.

Pure functions over run-log records; the HTML has inline SVG charts and no script or external
resource, so it opens offline and in any browser.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone

from pipelines.anomaly import is_baseline_run
from storage.paths import UnitId

PROVIDER_COLORS = {"shopify": "#5e8e3e", "amazon": "#e47911", "ebay": "#0064d2"}
DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """'36h', '90m', '2d', '1h30m' -> timedelta; ValueError otherwise."""
    parts = DURATION_RE.findall(text.strip().lower())
    if not parts or DURATION_RE.sub("", text.strip().lower()).strip():
        raise ValueError(f"not a duration: {text!r} (use e.g. 36h, 90m, 2d)")
    return timedelta(seconds=sum(float(n) * UNITS[u] for n, u in parts))


def stale_units(history: list[dict], units: list[UnitId], max_age: timedelta, now: datetime,
                defaults: dict[str, str]) -> dict[UnitId, str]:
    """Unit -> why it is stale: its last successful full run is older than max_age, or missing."""
    stale = {}
    for unit in units:
        finished = [datetime.fromisoformat(r["finished_at"]) for r in history if is_baseline_run(r, unit, defaults)]
        if not finished:
            stale[unit] = "no successful full run on record"
        elif now - max(finished) > max_age:
            stale[unit] = f"last successful full run finished {max(finished).isoformat()}, {_age(now - max(finished))} ago"
    return stale


def _entries(record: dict) -> dict[str, dict]:
    """A record's entries by label: `provider:account/stream` per unit; a run from before units
    (one account per provider) by provider name."""
    if record.get("record_version", 1) >= 2:
        return {str(UnitId(u["provider"], u["account"], u["stream"])): u for u in record.get("units", [])}
    return dict(record.get("providers", {}))


def _label(anomaly: dict) -> str:
    if "account" in anomaly:
        return str(UnitId(anomaly["provider"], anomaly["account"], anomaly.get("stream", "products")))
    return anomaly["provider"]


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def table(history: list[dict], last: int = 20) -> str:
    """Recent runs, newest last: status, duration, and new/duplicate/quarantined per unit."""
    runs = history[-last:]
    providers = sorted({p for r in runs for p, e in _entries(r).items() if e.get("status") != "skipped"})
    header = ["run", "status", "time"] + [f"{p} new/dup/quar" for p in providers] + ["anomalies"]
    rows = [header]
    for r in runs:
        row = [r["run_id"], r["status"] + (" (dry)" if r.get("dry_run") else "") + (" (limit)" if r.get("limited") else ""),
               f"{r.get('duration_s', 0):.1f}s"]
        for p in providers:
            e = _entries(r).get(p, {})
            if e.get("status") in (None, "skipped"):
                row.append("-")
            elif e.get("status") in ("failed", "locked"):
                row.append(e["status"])
            else:
                row.append(f"{e.get('written', 0)}/{e.get('duplicates', 0)}/{e.get('quarantined', 0)}")
        row.append(", ".join(f"{_label(a)} {a['signal']}" for a in r.get("anomalies", [])) or "")
        rows.append(row)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _chart(title: str, series: dict[str, list[tuple[int, float, bool]]], count: int, unit: str) -> str:
    """An SVG line chart: series name -> [(run index, value, is_anomaly)]."""
    width, height, pad = 720, 220, 40
    top = max([v for points in series.values() for _, v, _ in points] + [1])
    x = lambda i: pad + (width - 2 * pad) * (i / max(count - 1, 1))  # noqa: E731
    y = lambda v: height - pad - (height - 2 * pad) * (v / top)  # noqa: E731
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>',
             f'<text x="{pad - 6}" y="{pad + 4}" text-anchor="end" class="tick">{top:g}</text>',
             f'<text x="{pad - 6}" y="{height - pad}" text-anchor="end" class="tick">0</text>',
             f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle" class="tick">runs, oldest to newest ({unit})</text>']
    for index, (name, points) in enumerate(sorted(series.items())):
        color = PROVIDER_COLORS.get(name.split(":")[0], "#555")
        if points:
            path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i, v, bad in points:
            if bad:
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="6" class="anomaly">'
                             f'<title>{html.escape(name)}: anomaly at run {i + 1} ({v:g})</title></circle>')
        parts.append(f'<text x="{width - pad}" y="{pad + 14 * index}" text-anchor="end" fill="{color}" '
                     f'class="legend">{html.escape(name)}</text>')
    parts.append("</svg>")
    return f"<figure><figcaption>{html.escape(title)}</figcaption>{''.join(parts)}</figure>"


def html_report(history: list[dict], generated: datetime | None = None, last: int = 200) -> str:
    """A self-contained HTML page: volumes and durations over time, anomalies marked, recent runs."""
    runs = [r for r in history if not r.get("dry_run")][-last:]
    generated = generated or datetime.now(timezone.utc)
    providers = sorted({p for r in runs for p, e in _entries(r).items() if e.get("status") not in (None, "skipped")})
    series = {field: {p: [] for p in providers} for field in ("fetched", "written")}
    durations = {"run": []}
    for i, r in enumerate(runs):
        flagged = {(_label(a), a["signal"]) for a in r.get("anomalies", [])}
        for p in providers:
            e = _entries(r).get(p, {})
            if e.get("status") in ("ok", "partial"):
                series["fetched"][p].append((i, e.get("fetched", 0), (p, "fetched_drop") in flagged))
                series["written"][p].append((i, e.get("written", 0), (p, "written_spike") in flagged))
        durations["run"].append((i, r.get("duration_s", 0), False))
    anomaly_rows = "".join(
        f"<tr><td>{html.escape(r['run_id'])}</td><td>{html.escape(_label(a))}</td><td>{html.escape(a['signal'])}</td>"
        f"<td>{a['value']}</td><td>{a['median']:g}</td><td>{a['threshold']:g}</td></tr>"
        for r in runs for a in r.get("anomalies", []))
    recent = html.escape(table(runs, last=30))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Products pipeline: run history</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; max-width: 820px; }}
figure {{ margin: 1.5rem 0; }} figcaption {{ font-weight: 600; margin-bottom: .3rem; }}
svg {{ width: 100%; height: auto; background: #fafafa; border: 1px solid #ddd; }}
.axis {{ stroke: #999; }} .tick {{ font-size: 11px; fill: #555; }} .legend {{ font-size: 12px; font-weight: 600; }}
.anomaly {{ fill: none; stroke: #d00; stroke-width: 2.5; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
pre {{ background: #f4f4f4; padding: .8rem; overflow-x: auto; font-size: 12px; }}
</style></head><body>
<h1>Products pipeline: run history</h1>
<p>{len(runs)} runs (dry runs left out), generated {html.escape(generated.isoformat(timespec="seconds"))}.
Red circles mark anomalies: a drop in records fetched, or a spike in records written, against the
rolling median of the unit's last successful full runs.</p>
{_chart("Records fetched per run", series["fetched"], len(runs), "records")}
{_chart("New rows written per run", series["written"], len(runs), "rows")}
{_chart("Run duration", durations, len(runs), "seconds")}
<h2>Anomalies</h2>
{"<table><tr><th>run</th><th>unit</th><th>signal</th><th>value</th><th>median</th><th>threshold</th></tr>" + anomaly_rows + "</table>" if anomaly_rows else "<p>None.</p>"}
<h2>Recent runs</h2>
<pre>{recent}</pre>
</body></html>
"""
