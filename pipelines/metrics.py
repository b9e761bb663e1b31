"""Prometheus metrics in node_exporter's textfile-collector format, written atomically.

Point PIPELINE_METRICS_FILE at a `*.prom` file in the collector's directory (e.g.
/var/lib/node_exporter/textfile_collector/products_pipeline.prom). The file is world-readable
(0644) so the collector can read it; it holds counts and timestamps, never a secret.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path


def _labels(**labels) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def render(record: dict, last_success: dict) -> str:
    """The metrics text for one run; `last_success` maps each unit (provider, account, stream) to the
    ISO time of its last successful full run. Unit series carry provider, account and stream labels."""
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{_labels(**labels)} {value:g}" for labels, value in samples)

    finished = datetime.fromisoformat(record["finished_at"]).timestamp()
    units = [(u, {"provider": u["provider"], "account": u["account"], "stream": u["stream"]})
             for u in record.get("units", []) if u.get("status") != "skipped"]
    metric("products_pipeline_last_run_timestamp_seconds", "gauge", "When the last run finished.", [({}, finished)])
    metric("products_pipeline_last_run_exit_code", "gauge", "Exit code of the last run (0 ok).",
           [({}, record.get("exit_code", 0))])
    metric("products_pipeline_last_run_duration_seconds", "gauge", "Duration of the last run.",
           [({}, record.get("duration_s") or 0)])
    metric("products_pipeline_last_run_anomalies", "gauge", "Volume anomalies found by the last run.",
           [({}, len(record.get("anomalies", [])))])
    metric("products_pipeline_provider_up", "gauge", "1 if the unit's last run was ok or partial.",
           [(labels, 1 if u.get("status") in ("ok", "partial") else 0) for u, labels in units])
    for field, help_text in (("fetched", "Records fetched"), ("written", "New rows written"),
                             ("duplicates", "Records dropped as already written"),
                             ("quarantined", "Records quarantined"), ("requests", "HTTP requests made")):
        metric(f"products_pipeline_provider_{field}", "gauge", f"{help_text} by the unit's last run.",
               [(labels, u.get(field, 0)) for u, labels in units])
    metric("products_pipeline_provider_last_success_timestamp_seconds", "gauge",
           "When the unit last finished a successful full run.",
           [({"provider": p, "account": a, "stream": s}, datetime.fromisoformat(t).timestamp())
            for (p, a, s), t in sorted(last_success.items())])
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    """Replace `path` atomically (the collector never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")  # the collector only reads *.prom
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(staging, 0o644)
    os.replace(staging, path)
