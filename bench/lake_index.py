"""What a unit's state costs in an object store at N products (default 1,000,000): requests and
bytes of a first run, of a no-change rerun on an empty disk, and of a rerun where 3% changed.

The state is driven as the run drives it (storage/lake/index.py: keep_changed and
remember_versions per batch of 500, then commit), against the local S3 (moto behind the counting
proxy of sandbox/s3.py), so every request and byte is counted, not estimated. A Shopify no-change
rerun sees the products of one page in the lookback window: `--seen` of them (default 10).

  python bench/lake_index.py [N] [--seen 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.s3 import LocalS3  # noqa: E402
from storage.lake.index import LakeState  # noqa: E402
from storage.lake.objects import ObjectStore, parse_s3_url  # noqa: E402
from storage.paths import UnitId  # noqa: E402

UNIT = UnitId("shopify", "bench-shop.myshopify.com")
BATCH = 500
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def product(i: int, version: int = 0) -> tuple[str, str, datetime]:
    """(raw_hash, source_id, updated_at) of product i at a version."""
    return (hashlib.sha256(f"{i}/{version}".encode()).hexdigest(), f"gid://shopify/Product/{i}",
            EPOCH + timedelta(seconds=i + version * 10_000_000))


def drive(objects, products, run_id: str, commit: bool = True) -> tuple[float, int]:
    """One run's state work over `products`; returns (seconds, new rows)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    started, new = time.perf_counter(), 0
    state = LakeState(objects, UNIT, workdir, read_only=False)
    try:
        batch = []
        for item in products:
            batch.append(item)
            if len(batch) == BATCH:
                new += sum(state.keep_changed([(i, h) for h, i, _ in batch]))
                state.remember_versions([(i, t) for _, i, t in batch])
                batch = []
        if batch:
            new += sum(state.keep_changed([(i, h) for h, i, _ in batch]))
            state.remember_versions([(i, t) for _, i, t in batch])
        if commit:
            state.commit(run_id, {"high_water_mark": [datetime.now(timezone.utc).isoformat(), 1]})
        return time.perf_counter() - started, new
    finally:
        state.close()
        shutil.rmtree(workdir, ignore_errors=True)


def traffic(server) -> str:
    log = server.log(clear=True)
    kinds = {}
    for entry in log:
        kinds[entry["method"]] = kinds.get(entry["method"], 0) + 1
    sent, received = sum(e["bytes_in"] for e in log), sum(e["bytes_out"] for e in log)
    return (f"{len(log):>5} requests ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}), "
            f"{sent / 1e6:7.2f} MB up, {received / 1e6:7.2f} MB down")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("products", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--seen", type=int, default=10, help="products a no-change rerun sees (default 10)")
    args = parser.parse_args()
    n = args.products
    with LocalS3() as server:
        bucket = server.create_bucket()
        objects = ObjectStore(parse_s3_url(f"s3://{bucket}/lake", server.env()), server.env())
        server.log(clear=True)
        print(f"index of one unit at {n:,} products (a latest hash per product 16 B, versions 12 B each)")
        seconds, new = drive(objects, (product(i) for i in range(n)), "20261201T000000Z-000001")
        print(f"first run          {traffic(server)}  {seconds:6.1f} s  ({new:,} new)")
        seconds, new = drive(objects, (product(i) for i in range(0, n, max(1, n // args.seen))), "x", commit=False)
        print(f"no-change rerun    {traffic(server)}  {seconds:6.1f} s  ({args.seen} products seen, {new} new; "
              "nothing written)")
        changed = range(0, n, 33)  # 3%
        seconds, new = drive(objects, (product(i, 1) for i in changed), "20261201T060000Z-000002")
        print(f"rerun, 3% changed  {traffic(server)}  {seconds:6.1f} s  ({new:,} new)")
        manifest = objects.get(f"_state/{UNIT.provider}.{UNIT.account}.{UNIT.stream}/manifest.json")
        index = json.loads(manifest.body)["index"]
        shards = sum(len(entry["shards"]) for entry in index.values())
        bits = ", ".join(f"{kind}: {entry['bits']} bits" for kind, entry in index.items())
        print(f"manifest: {len(manifest.body) / 1e3:.1f} kB; the index: {n * 28 / 1e6:.1f} MB in {shards} shards ({bits})")


if __name__ == "__main__":
    main()
