"""Start-of-run recovery, under the provider's lock: make the files and the state agree again."""

from __future__ import annotations

from pathlib import Path

from storage.parquet import provider_files, sweep
from storage.state import ProviderState


def recover(state: ProviderState, data_dir: Path, provider: str) -> tuple[int, int]:
    """Remove staging files and the files of a run that died before its commit, then index any
    Parquet file the state does not know (a lost or restored state file). Returns (removed, adopted rows)."""
    inflight = state.get("inflight_run")
    removed = sweep(data_dir, provider, inflight)
    if inflight:
        state.delete("inflight_run")
    known = state.committed_files()
    unknown = [p for p in provider_files(data_dir, provider)
               if p.suffix == ".parquet" and not p.name.startswith(".")
               and p.relative_to(data_dir).as_posix() not in known]
    adopted = state.adopt(data_dir, unknown) if unknown else 0
    return len(removed), adopted
