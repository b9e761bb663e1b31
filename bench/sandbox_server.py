"""Start a Shopify sandbox in its own process for the benchmarks; prints one JSON line when ready.

Usage: python bench/sandbox_server.py --size N [--throttle] [--restore-rate 100] [--bucket 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.catalog import CatalogSpec  # noqa: E402
from sandbox.shopify import ShopifySandbox  # noqa: E402

TOKEN = "shpat_bench_token"
# The benchmark catalog: 1 to 5 variants a product, and 1% with more than 100.
BENCH_SPEC = dict(min_variants=1, max_variants=5, many_variants_every=100, many_variants=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--throttle", action="store_true")
    parser.add_argument("--bucket", type=float, default=2000)
    parser.add_argument("--restore-rate", type=float, default=100)
    args = parser.parse_args()
    server = ShopifySandbox(CatalogSpec(size=args.size, **BENCH_SPEC), token=TOKEN, throttle=args.throttle,
                            bucket_max=args.bucket, restore_rate=args.restore_rate).start()
    variants = sum(len(p["variants"]) for p in server.products.values())
    print(json.dumps({"base_url": server.base_url, "pid": os.getpid(), "token": TOKEN, "variants": variants}),
          flush=True)
    signal.signal(signal.SIGTERM, lambda *a: (server.stop(), sys.exit(0)))
    try:
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        costs = [e["cost"] for e in server.api_requests() if e.get("kind") == "query"]
        print(json.dumps({"charged_cost": server.charged_cost, "throttled": server.throttled_count,
                          "requests": len(server.api_requests()), "max_requested": max(costs, default=0)}), flush=True)
        server.stop()


if __name__ == "__main__":
    main()
