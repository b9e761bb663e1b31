"""Start a Shopify sandbox in its own process for the benchmarks; prints one JSON line when ready.

Usage: python bench/sandbox_server.py --size N [--catalog rich|simple] [--throttle] [--restore-rate 100]
       [--bucket 2000] [--bulk-order grouped|shuffled]

The rich catalog (the default) is shaped like a real shop's (sandbox/catalog.py: about 2.5
variants a product, one in a thousand with 100 to 250, descriptions of a few hundred bytes to
several KB with non-ASCII text, 0 to 10 tags). Up to --materialize products it is built once at
start, as a real server has its catalog ready; above that each product is built when served.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.catalog import CatalogSpec, LazyCatalog, make_catalog  # noqa: E402
from sandbox.shopify import ShopifySandbox  # noqa: E402

TOKEN = "shpat_bench_token"
# The simple catalog of the earlier figures: 1 to 5 variants a product, and 1% with more than 100.
SIMPLE_SPEC = dict(min_variants=1, max_variants=5, many_variants_every=100, many_variants=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--catalog", choices=("rich", "simple"), default="rich")
    parser.add_argument("--materialize", type=int, default=200_000, help="build a rich catalog up front up to this size")
    parser.add_argument("--throttle", action="store_true")
    parser.add_argument("--bucket", type=float, default=2000)
    parser.add_argument("--restore-rate", type=float, default=100)
    parser.add_argument("--bulk-order", choices=("grouped", "shuffled"), default="grouped")
    args = parser.parse_args()
    spec = CatalogSpec(size=args.size, rich=True) if args.catalog == "rich" else CatalogSpec(size=args.size, **SIMPLE_SPEC)
    server = ShopifySandbox(spec, token=TOKEN, throttle=args.throttle, bucket_max=args.bucket,
                            restore_rate=args.restore_rate)
    if isinstance(server.products, LazyCatalog):
        variants = server.products.variant_count()
        if args.size <= args.materialize:
            server.products = {p["id"]: p for p in make_catalog(spec)}
    else:
        variants = sum(len(p["variants"]) for p in server.products.values())
    server.bulk_shuffle = args.bulk_order == "shuffled"
    server.bulk_polls_to_finish = 1
    server.bulk_in_background = True
    server.start()
    print(json.dumps({"base_url": server.base_url, "pid": os.getpid(), "token": TOKEN, "variants": variants,
                      "catalog": args.catalog}), flush=True)
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
