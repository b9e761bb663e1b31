"""Time the pipeline's stages, so the hot spots show.

The records flow as in a pipeline run, a batch of 500 at a time through fetch, normalize, dedup
and write (one thread, the collector tuned as in a run: lean_gc), and each stage's wall time,
this process's CPU time and the sandbox's CPU time are added up over its batches:

  fetch+parse   paging: the Shopify connector against a sandbox in its own process (throttling
                off, the 1,000-point cap on): paging, variant follow-ups, JSON decoding
                bulk: a bulk operation's JSONL result (downloaded from the sandbox first, not
                timed) read and assembled into products with their variants
  normalize     raw record -> validated Product (of which: raw_hash alone, as the normalizer
                computes it, timed apart)
  dedup         the on-disk raw_hash index (lookups, then the commit)
  write         Products -> their rows by table (as the run splits them) -> Arrow -> Parquet row
                groups and files

Until 2026-12-01 this script held every record between stages and ran each stage over the whole
catalog; that cost each stage about 1.5x what a run pays (fresh memory for every record: decoding
a page whose records are kept costs 11 us a product against 6 when they are freed, as in a run).
The figures before that date were measured so.

On a shared machine a process's CPU time grows with the load on the other cores (caches, turbo):
--repeat N runs each path N times and reports each stage's least CPU (and its wall time then).

Usage: python bench/stages.py [N] [--path paging|bulk|both] [--repeat N] [--profile DIR]   (default 20000, both, 1)
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from itertools import islice
from pathlib import Path

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as the entrypoint sets it
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SandboxProcess, pipeline_env  # noqa: E402
from connectors import shopify, shopify_bulk  # noqa: E402
from connectors.http import HttpSettings  # noqa: E402
from normalize import shopify as shopify_normalizer  # noqa: E402
from normalize.dedup import raw_hash  # noqa: E402
from pipelines.config import load_settings  # noqa: E402
from pipelines.stages import keep_new, lean_gc, normalize_batch, record_rows  # noqa: E402
from storage.parquet import PartitionWriter  # noqa: E402
from storage.paths import TABLES as UNIT_TABLES, UnitId  # noqa: E402
from storage.quarantine import Quarantine  # noqa: E402
from storage.state import ProviderState  # noqa: E402

TABLES = UNIT_TABLES["products"]
BATCH = 500
TARGET_US = 80


class Stage:
    """One stage's wall, CPU and sandbox CPU, added up over the batches it runs (and profiled)."""

    def __init__(self, sandbox: SandboxProcess, name: str, profile_dir: Path | None):
        self.sandbox, self.name, self.profile_dir = sandbox, name, profile_dir
        self.wall = self.cpu = self.box = 0.0
        self.profiler = cProfile.Profile() if profile_dir else None

    def __enter__(self):
        self.started = time.perf_counter(), time.process_time(), self.sandbox.cpu_seconds()
        if self.profiler:
            self.profiler.enable()
        return self

    def __exit__(self, *exc):
        if self.profiler:
            self.profiler.disable()
        wall, cpu, box = self.started
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.box += self.sandbox.cpu_seconds() - box

    def dump(self) -> None:
        if self.profiler:
            self.profiler.dump_stats(self.profile_dir / f"{self.name.strip().replace(' ', '_')}.prof")


def paging_records(sandbox, root: Path):
    shop = load_settings(pipeline_env(root, sandbox)).provider("shopify")
    http = shopify.make_client(shop, HttpSettings(cache_dir=None))
    try:
        yield from shopify.iter_records(http, shop)
    finally:
        http.close()


def bulk_records(sandbox, root: Path):
    """Download the bulk result first (not timed), then read and assemble it as it is pulled."""
    shop = load_settings(pipeline_env(root, sandbox, SHOPIFY_BULK_MIN_PRODUCTS="1")).provider("shopify")
    http = shopify.make_client(shop, HttpSettings(cache_dir=None))
    api = shopify.ShopifyGraphQL(http, shop, time.monotonic)
    operation = shopify_bulk._wait(api, shopify_bulk._start(api, shopify.BULK_QUERY))
    path = http.download(operation["url"], root / "result.jsonl")
    http.close()
    return shopify_bulk.assemble_file(path, root / "assemble.sqlite")


def run(size: int, path: str, profile_dir: Path | None) -> list:
    sandbox = SandboxProcess(size)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            now = datetime.now(timezone.utc)
            run_id = now.strftime("%Y%m%dT%H%M%SZ-") + "be0c40"
            records = (paging_records if path == "paging" else bulk_records)(sandbox, root)
            fetch, hashing, normalize, dedup, write = (
                Stage(sandbox, f"{path} {name}", profile_dir) for name in ("fetch+parse", "raw_hash", "normalize",
                                                                            "dedup", "write"))
            quarantine = Quarantine(root / "quarantine.jsonl", enabled=False)
            state = ProviderState.open(root / "state.sqlite")
            writer = PartitionWriter(root / "data", UnitId("shopify", "bench-shop.myshopify.com"), run_id,
                                     date.today(), 0o640)
            fetched = written = 0
            while True:
                with fetch:
                    raws = list(islice(records, BATCH))
                if not raws:
                    break
                fetched += len(raws)
                with hashing:
                    for raw in raws:
                        normalizer_hash(raw)
                with normalize:
                    products = normalize_batch(raws, shopify_normalizer.to_product,
                                               (shopify_normalizer.SOURCE, shopify_normalizer.NORMALIZER_VERSION),
                                               account="bench-shop.myshopify.com", fetched_at=now, run_id=run_id,
                                               quarantine=quarantine)
                with dedup:
                    new = keep_new(products, state)
                with write:  # as the run's store.write: each record's rows by table, then the products'
                    rows = [record_rows(product, TABLES) for product in new]
                    writer.add([row for record in rows for row in record.get("products", ())])
                written += len(new)
                del raws, products, new
            with dedup:
                state.commit(run_id, [], {})
            with write:
                writer.close()
            state.close()
            assert fetched == size == written, f"{fetched} fetched, {written} written of {size} products"
            for stage in (fetch, hashing, normalize, dedup, write):
                stage.dump()
    finally:
        sandbox.stop()
    return [("fetch+parse", fetch, size), ("normalize", normalize, size), ("  of which raw_hash", hashing, size),
            ("dedup", dedup, size), ("write", write, size)]


def normalizer_hash(raw: dict) -> str:
    """raw_hash as the Shopify normalizer computes it: its fast path for a record of the queries'
    shape (nearly all), the walk over the record otherwise. Until 2026-12-02 this stage timed the
    walk (`normalize.dedup.raw_hash`) for every record: 22 to 24 us a product, against 13 to 17 here."""
    try:
        return shopify_normalizer._hash(raw, raw.get("variants") or [])
    except Exception:  # noqa: BLE001 - not plain: the normalizer's model path hashes with the walk
        return raw_hash(shopify_normalizer.SOURCE, shopify_normalizer.NORMALIZER_VERSION, raw)


def report(size: int, path: str, rows: list) -> None:
    print(f"\nStages, {path} path, {size:,} products of the rich catalog, {BATCH} at a time")
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
