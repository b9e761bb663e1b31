"""`python -m sandbox`: start the local provider APIs and print the variables to export."""

from __future__ import annotations

import argparse
import os
import time

from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox

DEMO_SHOP = "demo-shop.myshopify.com"
DEMO_TOKEN = "shpat_sandbox_demo_token"


def start_all(size: int = 500, port: int = 0, restore_rate: float = 1000) -> dict:
    """Start every sandbox; returns {"servers": [...], "env": {variable: value}}."""
    shopify = ShopifySandbox(CatalogSpec(size=size), token=DEMO_TOKEN, restore_rate=restore_rate,
                             port=port).start()
    env = {
        "SHOPIFY_API_BASE_URL": shopify.base_url,
        "SHOPIFY_SHOP_DOMAIN": DEMO_SHOP,
        "SHOPIFY_ACCESS_TOKEN": DEMO_TOKEN,
    }
    return {"servers": {"shopify": shopify}, "env": env}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=int(os.environ.get("SANDBOX_SIZE", 500)),
                        help="products in the Shopify catalog (default 500)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SANDBOX_PORT", 0)),
                        help="Shopify sandbox port (default: any free port)")
    args = parser.parse_args()
    started = start_all(args.size, args.port)
    print("Sandbox running. In another shell, export:\n")
    for name, value in started["env"].items():
        print(f"export {name}={value}")
    print("\nthen try:  .venv/bin/python pipelines/run_pipeline.py --dry-run --providers shopify --limit 10")
    print(f"change 3% of products:  curl -X POST {started['servers']['shopify'].base_url}/_sandbox/mutate "
          "-d '{\"fraction\": 0.03}'")
    print("\nCtrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        for server in started["servers"].values():
            server.stop()


if __name__ == "__main__":
    main()
