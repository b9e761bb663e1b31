"""Start-of-run recovery, under the unit's lock: make its files and its state agree again."""

from __future__ import annotations

from pathlib import Path

from storage.paths import TABLES, UnitId, parse_file_name
from storage.state import ProviderState
from storage.sweep import sweep, unit_files


def recover(state: ProviderState, data_dir: Path, unit: UnitId, *, legacy: bool = False,
            tables=None) -> tuple[int, int]:
    """Remove the unit's staging files and the files of its run that died before its commit, then
    index any of its Parquet files the state does not know (a lost or restored state file). Only
    the unit's own files are looked at (with `legacy`, also its provider's files from before units,
    which only the unit that inherited that provider's state owns). With a Delta table (`tables`),
    a run that died between its commit and its state write cannot be taken back: the rows it
    committed are adopted into the index instead. Returns (removed, adopted rows)."""
    inflight = state.get("inflight_run")
    removed = sweep(data_dir, unit, inflight, legacy=legacy)
    if inflight and tables is not None:
        found = tables.recover(unit, inflight, TABLES[unit.stream])
        if found is not None:
            from storage.delta import adopt

            adopted = adopt(state, found)
            state.commit(inflight, [], {})
            return len(removed), adopted
    if inflight:
        state.delete("inflight_run")
    known = state.committed_files()
    unknown = [p for p in unit_files(data_dir, unit, legacy=legacy)
               if not parse_file_name(p.name)[2] and p.relative_to(data_dir).as_posix() not in known]
    adopted = state.adopt(data_dir, unknown) if unknown else 0
    return len(removed), adopted
