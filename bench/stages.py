"""Time the pipeline's stages one at a time, so the hot spots show.

This process runs each stage to completion over the whole catalog before the next starts, and
prints its wall time, this process's CPU time, the sandbox's CPU time and our CPU a record:

  fetch+parse   paging: the Shopify connector against a sandbox in its own process (throttling
                off, the 1,000-point cap on): paging, variant follow-ups, JSON decoding
                bulk: a bulk operation's JSONL result (downloaded from the sandbox first, not
                timed) read and assembled into products with their variants
  normalize     raw record -> validated Product (of which: raw_hash alone)
  dedup         the on-disk raw_hash index (lookups, then the commit)
  write         Products -> Arrow -> Parquet row groups and files

Holding every record between stages is what the pipeline never does; it is done here only so each
stage can be timed alone (use a size that fits in memory: 10k-100k). The collector is tuned as
in a pipeline run (lean_gc). The catalog is the rich one (bench/sandbox_server.py).

On a shared machine a process's CPU time grows with the load on the other cores (caches, turbo):
--repeat N runs each path N times and reports each stage's least CPU (and its wall time then).

Usage: python bench/stages.py [N] [--path paging|bulk|both] [--repeat N] [--profile DIR]   (default 20000, both, 1)
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as the entrypoint sets it
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SandboxProcess, pipeline_env  # noqa: E402
from connectors import shopify, shopify_bulk  # noqa: E402
from connectors.http import HttpSettings  # noqa: E402
from normalize import shopify as shopify_normalizer  # noqa: E402
from normalize.dedup import raw_hash  # noqa: E402
from pipelines.config import load_settings  # noqa: E402
from pipelines.stages import batched, keep_new, lean_gc, normalize_batch  # noqa: E402
from storage.parquet import PartitionWriter  # noqa: E402
from storage.paths import UnitId  # noqa: E402
from storage.quarantine import Quarantine  # noqa: E402
from storage.state import ProviderState  # noqa: E402

BATCH = 500
TARGET_US = 80


class Stage:
    def __init__(self, sandbox: SandboxProcess, name: str, profile_dir: Path | None):
        self.sandbox, self.name, self.profile_dir = sandbox, name, profile_dir

    def __enter__(self):
        # What the stages before this one built is held only so the stages can be timed apart (a
        # pipeline run holds a batch at a time): out of the collector's sight, as lean_gc keeps
        # what was loaded at start, so collections do not rescan the whole catalog.
        gc.freeze()
        self.profiler = cProfile.Profile() if self.profile_dir else None
        self.wall, self.cpu, self.box = time.perf_counter(), time.process_time(), self.sandbox.cpu_seconds()
        if self.profiler:
            self.profiler.enable()
        return self

    def __exit__(self, *exc):
        if self.profiler:
            self.profiler.disable()
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.box = self.sandbox.cpu_seconds() - self.box
        if self.profiler:
            self.profiler.dump_stats(self.profile_dir / f"{self.name.strip().replace(' ', '_')}.prof")


def fetch_paging(sandbox, root: Path, stage) -> list:
    shop = load_settings(pipeline_env(root, sandbox)).provider("shopify")
    http = shopify.make_client(shop, HttpSettings(cache_dir=None))
    with stage:
        raws = list(shopify.iter_records(http, shop))
    http.close()
    return raws


def fetch_bulk(sandbox, root: Path, stage) -> list:
    """Download the bulk result first (not timed), then time reading and assembling it."""
    shop = load_settings(pipeline_env(root, sandbox, SHOPIFY_BULK_MIN_PRODUCTS="1")).provider("shopify")
    http = shopify.make_client(shop, HttpSettings(cache_dir=None))
    api = shopify.ShopifyGraphQL(http, shop, time.monotonic)
    operation = shopify_bulk._wait(api, shopify_bulk._start(api, shopify.BULK_QUERY))
    path = http.download(operation["url"], root / "result.jsonl")
    http.close()
    with stage:
        raws = list(shopify_bulk.assemble_file(path, root / "assemble.sqlite"))
    return raws


def run(size: int, path: str, profile_dir: Path | None) -> list:
    sandbox = SandboxProcess(size)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            now = datetime.now(timezone.utc)
            run_id = now.strftime("%Y%m%dT%H%M%SZ-") + "be0c40"
            fetch = Stage(sandbox, f"{path} fetch+parse", profile_dir)
            raws = (fetch_paging if path == "paging" else fetch_bulk)(sandbox, root, fetch)
            rows.append(("fetch+parse", fetch, len(raws)))
            assert len(raws) == size, f"{len(raws)} of {size} products"

            with Stage(sandbox, f"{path} raw_hash", profile_dir) as hashing:
                for raw in raws:
                    raw_hash(shopify_normalizer.SOURCE, shopify_normalizer.NORMALIZER_VERSION, raw)
            with Stage(sandbox, f"{path} normalize", profile_dir) as normalize:
                quarantine = Quarantine(root / "quarantine.jsonl", enabled=False)
                products = [p for batch in batched(raws, BATCH)
                            for p in normalize_batch(batch, shopify_normalizer.to_product,
                                                     (shopify_normalizer.SOURCE, shopify_normalizer.NORMALIZER_VERSION),
                                                     account="bench-shop.myshopify.com",
                                                     fetched_at=now, run_id=run_id, quarantine=quarantine)]
            rows.append(("normalize", normalize, len(raws)))
            rows.append(("  of which raw_hash", hashing, len(raws)))
            del raws

            state = ProviderState.open(root / "state.sqlite")
            with Stage(sandbox, f"{path} dedup", profile_dir) as dedup:
                new = [p for batch in batched(products, BATCH) for p in keep_new(batch, state)]
                state.commit(run_id, [], {})
            state.close()
            rows.append(("dedup", dedup, len(products)))

            unit = UnitId("shopify", "bench-shop.myshopify.com")
            writer = PartitionWriter(root / "data", unit, run_id, date.today(), 0o640)
            with Stage(sandbox, f"{path} write", profile_dir) as write:
                for batch in batched(new, BATCH):
                    writer.add(batch)
                writer.close()
            rows.append(("write", write, len(new)))
    finally:
        sandbox.stop()
    return rows


def report(size: int, path: str, rows: list) -> None:
    print(f"\nStages, {path} path, {size:,} products of the rich catalog, one at a time")
    print(f"{'stage':<20} {'wall s':>7} {'our CPU s':>9} {'sandbox CPU s':>13} {'records/s':>10} {'our CPU us/record':>17}")
    for name, stage, count in rows:
        print(f"{name:<20} {stage.wall:>7.2f} {stage.cpu:>9.2f} {stage.box:>13.2f} {count / stage.wall:>10,.0f} "
              f"{stage.cpu / count * 1e6:>17.1f}")
    ours = sum(stage.cpu for name, stage, _ in rows if not name.startswith(" "))
    per_product = ours / size * 1e6
    print(f"{'every stage':<20} {'':>7} {ours:>9.2f} {rows[0][1].box:>13.2f} {'':>10} {per_product:>17.1f}"
          f"   target <= {TARGET_US} us: {'MET' if per_product <= TARGET_US else 'NOT MET'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("size", nargs="?", type=int, default=20_000)
    parser.add_argument("--path", choices=("paging", "bulk", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path; each stage's least CPU counts")
    parser.add_argument("--profile", type=Path, help="write a cProfile file per stage into this folder")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    for path in ("paging", "bulk") if args.path == "both" else (args.path,):
        best = None
        for _ in range(args.repeat):
            with lean_gc():
                rows = run(args.size, path, args.profile)
            best = rows if best is None else [min(b, r, key=lambda row: row[1].cpu) for b, r in zip(best, rows)]
        report(args.size, path, best)


if __name__ == "__main__":
    main()
