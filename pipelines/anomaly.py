"""Volume anomalies: a unit's fetched count dropping, or its written count spiking, against the
rolling median of its last N successful full runs. Pure: history in, findings out.

With dedup, a healthy catalog writes few rows most runs, so the two signals differ: a drop in
records fetched (a broken search, an emptied shop, a revoked scope: down to zero included) and a
spike in records written (a normalizer change, a feed re-keying every item). A floor keeps a
median of zero from making every non-zero run a spike.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from storage.paths import UnitId


@dataclass(frozen=True)
class AnomalyRules:
    window: int = 8  # successful full runs in the baseline
    factor: float = 3.0  # how far from the median counts as an anomaly
    floor: int = 50  # a spike must also write more than this many rows


def unit_entries(record: dict, defaults: dict[str, str]) -> dict[UnitId, dict]:
    """A run record's entries by unit. A record from before units (no `record_version`, one account
    per provider) counts as the runs of each provider's default account (`defaults`: provider ->
    account name), so baselines and freshness carry over an upgrade."""
    if record.get("record_version", 1) >= 2:
        return {UnitId(u["provider"], u["account"], u["stream"]): u for u in record.get("units", [])}
    return {UnitId(p, defaults[p]): e for p, e in record.get("providers", {}).items() if p in defaults}


def is_baseline_run(record: dict, unit: UnitId, defaults: dict[str, str]) -> bool:
    """A successful full run of `unit`: not dry, not limited, the unit ok."""
    entry = unit_entries(record, defaults).get(unit, {})
    return not record.get("dry_run") and not record.get("limited") and entry.get("status") == "ok"


def baseline(history: list[dict], unit: UnitId, window: int, defaults: dict[str, str]) -> list[dict]:
    """The unit's entries from its last `window` successful full runs, oldest first."""
    runs = [unit_entries(r, defaults)[unit] for r in history if is_baseline_run(r, unit, defaults)]
    return runs[-window:]


def detect(entry: dict, history: list[dict], unit: UnitId, rules: AnomalyRules,
           defaults: dict[str, str]) -> dict:
    """{"cold_start": bool, "baseline_runs": n, "anomalies": [...]} for one unit's run entry."""
    runs = baseline(history, unit, rules.window, defaults)
    if len(runs) < rules.window:
        return {"cold_start": True, "baseline_runs": len(runs), "anomalies": []}
    fetched_median = median(r.get("fetched", 0) for r in runs)
    written_median = median(r.get("written", 0) for r in runs)
    anomalies = []
    drop_below = fetched_median / rules.factor
    if fetched_median > 0 and entry.get("fetched", 0) < drop_below:
        anomalies.append({"signal": "fetched_drop", "value": entry.get("fetched", 0),
                          "median": fetched_median, "threshold": round(drop_below, 3)})
    spike_above = max(rules.floor, written_median * rules.factor)
    if entry.get("written", 0) > spike_above:
        anomalies.append({"signal": "written_spike", "value": entry.get("written", 0),
                          "median": written_median, "threshold": round(spike_above, 3)})
    return {"cold_start": False, "baseline_runs": len(runs), "anomalies": anomalies}


def describe(unit: UnitId, anomaly: dict) -> str:
    what = {"fetched_drop": "fetched", "written_spike": "wrote"}[anomaly["signal"]]
    direction = "below" if anomaly["signal"] == "fetched_drop" else "above"
    return (f"{unit}: {what} {anomaly['value']} records, {direction} the threshold {anomaly['threshold']:g} "
            f"(median {anomaly['median']:g} over the last successful full runs)")
