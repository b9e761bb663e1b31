"""What a second core would buy the bulk JSONL path: a measurement, not the pipeline's code.

The pipeline reads a downloaded bulk result in one process (read and assemble, normalize, dedup,
write: 118-143 us of CPU a product, one core busy, the other idle). This script downloads the
same result from the sandbox, then turns it into Parquet twice, timing each after the download:

  one process   the pipeline's stages in one thread, batch by batch as a run does
  split K       the file cut into K byte ranges at product lines; K worker processes each read,
                assemble and normalize theirs and send each batch back as Arrow (IPC bytes, no
                pickled models); this process dedups on the batch's raw_hash column (the same
                state calls keep_new makes) and writes the new rows (PartitionWriter.add_table)

and checks that both wrote every product. Quarantine and the high-water mark are left out of the
split (a pipeline would carry rejects and each batch's greatest cursor back with the batch).

Usage: python bench/split_bulk.py [N] [--workers K ...]   (default 200000, K = 1 and 2)
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from multiprocessing.connection import wait
from pathlib import Path

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.common import SandboxProcess, pipeline_env  # noqa: E402
from connectors import shopify, shopify_bulk  # noqa: E402
from connectors.http import HttpSettings  # noqa: E402
from normalize import shopify as shopify_normalizer  # noqa: E402
from pipelines.config import load_settings  # noqa: E402
from pipelines.stages import BATCH_SIZE, batched, keep_new, lean_gc, normalize_batch  # noqa: E402
from storage.parquet import PartitionWriter, to_table  # noqa: E402
from storage.paths import UnitId  # noqa: E402
from storage.quarantine import Quarantine  # noqa: E402
from storage.state import ProviderState  # noqa: E402

ACCOUNT = "bench-shop.myshopify.com"
IDENTITY = (shopify_normalizer.SOURCE, shopify_normalizer.NORMALIZER_VERSION)


def download(sandbox, root: Path) -> Path:
    shop = load_settings(pipeline_env(root, sandbox, SHOPIFY_BULK_MIN_PRODUCTS="1")).provider("shopify")
    http = shopify.make_client(shop, HttpSettings(cache_dir=None))
    api = shopify.ShopifyGraphQL(http, shop, time.monotonic)
    operation = shopify_bulk._wait(api, shopify_bulk._start(api, shopify.BULK_QUERY))
    path = http.download(operation["url"], root / "result.jsonl")
    http.close()
    return path


def one_process(path: Path, root: Path, now: datetime, run_id: str) -> int:
    state = ProviderState.open(root / "state.sqlite")
    writer = PartitionWriter(root / "data", UnitId("shopify", ACCOUNT), run_id, date.today(), 0o640)
    quarantine = Quarantine(root / "quarantine.jsonl", enabled=False)
    for raws in batched(shopify_bulk.assemble_file(path, root / "assemble.sqlite"), BATCH_SIZE):
        products = normalize_batch(raws, shopify_normalizer.to_product, IDENTITY, account=ACCOUNT,
                                   fetched_at=now, run_id=run_id, quarantine=quarantine)
        writer.add(keep_new(products, state))
    writer.close()
    state.commit(run_id, [], {})
    state.close()
    return writer.rows


def split_points(path: Path, parts: int) -> list[int]:
    """Byte offsets that start a product's line (a line without __parentId), about evenly spaced."""
    size, points = path.stat().st_size, [0]
    with path.open("rb") as lines:
        for k in range(1, parts):
            lines.seek(size * k // parts)
            lines.readline()  # the rest of a line cut in two
            while True:
                at, line = lines.tell(), lines.readline()
                if not line or b'"__parentId"' not in line:
                    points.append(at)
                    break
    return points + [size]


def lines_between(path: Path, start: int, end: int):
    with path.open("rb") as lines:
        lines.seek(start)
        at = start
        while at < end:
            block = lines.readlines(1 << 20)
            if not block:
                return
            for line in block:
                if at >= end:
                    return
                at += len(line)
                yield line


def worker(path: Path, start: int, end: int, conn, now: datetime, run_id: str) -> None:
    with lean_gc():
        quarantine = Quarantine(Path(os.devnull), enabled=False)
        for raws in batched(shopify_bulk._stream_grouped(lines_between(path, start, end)), BATCH_SIZE):
            products = normalize_batch(raws, shopify_normalizer.to_product, IDENTITY, account=ACCOUNT,
                                       fetched_at=now, run_id=run_id, quarantine=quarantine)
            sink = pa.BufferOutputStream()
            table = to_table(products)
            with pa.ipc.new_stream(sink, table.schema) as stream:
                stream.write_table(table)
            conn.send_bytes(sink.getvalue())
    conn.send_bytes(b"")
    conn.close()


def split(path: Path, root: Path, now: datetime, run_id: str, workers: int) -> int:
    state = ProviderState.open(root / "state.sqlite")
    writer = PartitionWriter(root / "data", UnitId("shopify", ACCOUNT), run_id, date.today(), 0o640)
    points = split_points(path, workers)
    context = multiprocessing.get_context("fork")
    conns, procs = [], []
    for start, end in zip(points, points[1:]):
        mine, theirs = context.Pipe(duplex=False)
        proc = context.Process(target=worker, args=(path, start, end, theirs, now, run_id))
        proc.start()
        theirs.close()
        conns.append(mine)
        procs.append(proc)
    while conns:
        for conn in wait(conns):
            data = conn.recv_bytes()
            if not data:
                conns.remove(conn)
                continue
            table = pa.ipc.open_stream(data).read_all()
            flags = state.keep_unseen(table.column("raw_hash").to_pylist())
            state.remember_versions(zip(table.column("source_id").to_pylist(),
                                        table.column("source_updated_at").to_pylist()))
            writer.add_table(table.filter(pa.array(flags, pa.bool_())))
    for proc in procs:
        proc.join()
    writer.close()
    state.commit(run_id, [], {})
    state.close()
    return writer.rows


def timed(label: str, size: int, step, *args) -> dict:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), time.process_time()
    with lean_gc():
        rows = step(*args)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    assert rows == size, f"{label}: {rows} of {size} products written"
    return {"label": label, "wall": wall, "cpu": cpu, "child_cpu": child_cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("size", nargs="?", type=int, default=200_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="the least wall time of each counts")
    args = parser.parse_args()
    sandbox = SandboxProcess(args.size)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            path = download(sandbox, root)
            now = datetime.now(timezone.utc)
            steps = [("one process", lambda out, run_id: one_process(path, out, now, run_id))]
            steps += [(f"split {k}", lambda out, run_id, k=k: split(path, out, now, run_id, k)) for k in args.workers]
            for label, step in steps:
                best = None
                for attempt in range(args.repeat):
                    out = root / f"{label.replace(' ', '-')}-{attempt}"
                    out.mkdir()
                    gc.collect()
                    run_id = now.strftime("%Y%m%dT%H%M%SZ-") + f"{attempt:06x}"
                    result = timed(label, args.size, step, out, run_id)
                    files = list((out / "data").rglob("*.parquet"))
                    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == args.size
                    best = result if best is None or result["wall"] < best["wall"] else best
                results.append(best)
    finally:
        sandbox.stop()
    print(f"\nThe bulk result of {args.size:,} products of the rich catalog into Parquet, after the download")
    print(f"{'':<12} {'wall s':>7} {'parent CPU s':>12} {'workers CPU s':>13} {'CPU us/product':>14} {'products/s':>10}")
    for r in results:
        total = r["cpu"] + r["child_cpu"]
        print(f"{r['label']:<12} {r['wall']:>7.1f} {r['cpu']:>12.1f} {r['child_cpu']:>13.1f} "
              f"{total / args.size * 1e6:>14.0f} {args.size / r['wall']:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
