"""Time the pipeline's stages one at a time, so the hot spots show.

Against a sandbox in its own process (throttling off, the 1,000-point cap on), this process runs
each stage to completion over the whole catalog before the next starts, and prints its wall time,
this process's CPU time, the sandbox's CPU time and the rate:

  fetch+parse   the Shopify connector (paging, variant follow-ups, JSON decoding)
  normalize     raw record -> validated Product (of which: raw_hash alone)
  dedup         the on-disk raw_hash index (lookups, then the commit)
  write         Products -> Arrow -> Parquet row groups and files

Holding every record between stages is what the pipeline never does; it is done here only so each
stage can be timed alone (use a size that fits in memory: 10k-100k). The collector is tuned as
in a pipeline run (lean_gc).

Usage: python bench/stages.py [N]   (default 20000)
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SandboxProcess, pipeline_env  # noqa: E402
from connectors import shopify  # noqa: E402
from connectors.http import HttpSettings  # noqa: E402
from normalize import shopify as shopify_normalizer  # noqa: E402
from normalize.dedup import raw_hash  # noqa: E402
from pipelines.config import load_settings  # noqa: E402
from pipelines.stages import batched, keep_new, lean_gc, normalize_batch  # noqa: E402
from storage.parquet import PartitionWriter  # noqa: E402
from storage.quarantine import Quarantine  # noqa: E402
from storage.state import ProviderState  # noqa: E402

BATCH = 500


class Stage:
    def __init__(self, sandbox: SandboxProcess):
        self.sandbox = sandbox

    def __enter__(self):
        self.wall, self.cpu, self.box = time.perf_counter(), time.process_time(), self.sandbox.cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.box = self.sandbox.cpu_seconds() - self.box


def main(size: int) -> None:
    with lean_gc():
        _main(size)


def _main(size: int) -> None:
    sandbox = SandboxProcess(size)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            settings = load_settings(pipeline_env(root, sandbox))
            shop = settings.provider("shopify")
            http = shopify.make_client(shop, HttpSettings(cache_dir=None))
            now = datetime.now(timezone.utc)
            run_id = now.strftime("%Y%m%dT%H%M%SZ-") + "be0c40"

            with Stage(sandbox) as fetch:
                raws = list(shopify.iter_records(http, shop))
            http.close()
            rows.append(("fetch+parse", fetch, len(raws)))

            with Stage(sandbox) as hashing:
                for raw in raws:
                    raw_hash(shopify_normalizer.SOURCE, shopify_normalizer.NORMALIZER_VERSION, raw)
            with Stage(sandbox) as normalize:
                quarantine = Quarantine(root / "quarantine.jsonl", enabled=False)
                products = [p for batch in batched(raws, BATCH)
                            for p in normalize_batch(batch, shopify_normalizer.to_product,
                                                     (shopify_normalizer.SOURCE, shopify_normalizer.NORMALIZER_VERSION),
                                                     account=shop.account,
                                                     fetched_at=now, run_id=run_id, quarantine=quarantine)]
            rows.append(("normalize", normalize, len(raws)))
            rows.append(("  of which raw_hash", hashing, len(raws)))
            del raws

            state = ProviderState.open(root / "state.sqlite")
            with Stage(sandbox) as dedup:
                new = [p for batch in batched(products, BATCH) for p in keep_new(batch, state)]
                state.commit(run_id, [], {})
            state.close()
            rows.append(("dedup", dedup, len(products)))

            writer = PartitionWriter(root / "data", "shopify", run_id, date.today(), 0o640)
            with Stage(sandbox) as write:
                for batch in batched(new, BATCH):
                    writer.add(batch)
                writer.close()
            rows.append(("write", write, len(new)))
    finally:
        sandbox.stop()

    print(f"Stages for {size:,} products, one at a time (seconds)")
    print(f"{'stage':<20} {'wall s':>7} {'our CPU s':>9} {'sandbox CPU s':>13} {'records/s':>10} {'us/record':>9}")
    for name, stage, count in rows:
        print(f"{name:<20} {stage.wall:>7.2f} {stage.cpu:>9.2f} {stage.box:>13.2f} {count / stage.wall:>10,.0f} "
              f"{stage.wall / count * 1e6:>9.0f}")
    ours = sum(stage.cpu for name, stage, _ in rows if not name.startswith(" "))
    print(f"{'all stages':<20} {'':>7} {ours:>9.2f} {fetch.box:>13.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
