"""`python -m sandbox`: start the local provider APIs and print the variables to export."""

from __future__ import annotations

import argparse
import os
import time

from sandbox.amazon import LWA_PATH, AmazonSandbox
from sandbox.catalog import CatalogSpec
from sandbox.ebay import EbaySandbox
from sandbox.shopify import ShopifySandbox

DEMO_SHOP = "demo-shop.myshopify.com"
# A Dev Dashboard app, as a shop set up since 2026 has one; its tokens live seconds here (24 hours
# at Shopify), so every run shows them re-minted. A legacy custom app's static token works too.
DEMO_CLIENT_ID, DEMO_CLIENT_SECRET = "sandbox-shopify-client-id", "sandbox-shopify-client-secret"
DEMO_TOKEN_LIFETIME_S = 2
DEMO_TOKEN = "shpat_sandbox_demo_token"
AMAZON_ID, AMAZON_SECRET, AMAZON_TAG = "sandbox-credential-id", "sandbox-credential-secret", "sandbox-20"
AMAZON_RATE = 5.0  # requests per second the Amazon sandbox enforces (and the demo asks for)
EBAY_ID, EBAY_SECRET = "sandbox-client-id", "sandbox-client-secret"
EBAY_RATE = 10.0
# One eBay seller's consent to the keyset: its refresh token mints the user tokens getOrders needs.
EBAY_SELLER, EBAY_REFRESH = "demo_seller", "sandbox-ebay-refresh-token"
EBAY_ORDERS = 120
SECOND_SHOP, SECOND_TOKEN = "eu-demo-shop.myshopify.com", "shpat_sandbox_eu_demo_token"


def start_all(size: int = 500, port: int = 0, restore_rate: float = 1000) -> dict:
    """Start every sandbox; returns {"servers": [...], "env": {variable: value}}."""
    shopify = ShopifySandbox(CatalogSpec(size=size), token=DEMO_TOKEN, client_id=DEMO_CLIENT_ID,
                             client_secret=DEMO_CLIENT_SECRET, token_lifetime_s=DEMO_TOKEN_LIFETIME_S,
                             restore_rate=restore_rate, port=port).start()
    shopify.oauth.scope = "read_products,read_orders,read_all_orders"  # the app may read orders too
    amazon = AmazonSandbox(credential_id=AMAZON_ID, credential_secret=AMAZON_SECRET, partner_tag=AMAZON_TAG,
                           requests_per_second=AMAZON_RATE).start()
    ebay = EbaySandbox(client_id=EBAY_ID, client_secret=EBAY_SECRET, requests_per_second=EBAY_RATE,
                       token_lifetime_s=7200, sellers={EBAY_REFRESH: EBAY_SELLER}, orders=EBAY_ORDERS).start()
    # A second shop of its own (another host, catalog and legacy custom app token), for the
    # accounts file: an agency's two stores.
    second = ShopifySandbox(CatalogSpec(size=max(size * 3 // 5, 1), seed=11), token=SECOND_TOKEN,
                            restore_rate=restore_rate).start()
    env = {
        "SHOPIFY_API_BASE_URL": shopify.base_url,
        "SHOPIFY_SHOP_DOMAIN": DEMO_SHOP,
        "SHOPIFY_CLIENT_ID": DEMO_CLIENT_ID,
        "SHOPIFY_CLIENT_SECRET": DEMO_CLIENT_SECRET,
        "AMAZON_API_BASE_URL": amazon.base_url,
        "AMAZON_TOKEN_URL": amazon.base_url + LWA_PATH,
        "AMAZON_CREATORS_CREDENTIAL_ID": AMAZON_ID,
        "AMAZON_CREATORS_CREDENTIAL_SECRET": AMAZON_SECRET,
        "AMAZON_CREATORS_VERSION": "3.1",
        "AMAZON_PARTNER_TAG": AMAZON_TAG,
        "AMAZON_SEARCH_KEYWORDS": "steel mug|HomeAndKitchen,headphones",
        "AMAZON_ASINS": ",".join(sorted(amazon.items)[:12]),
        "AMAZON_REQUESTS_PER_SECOND": str(AMAZON_RATE),
        "EBAY_API_BASE_URL": ebay.base_url,
        "EBAY_CLIENT_ID": EBAY_ID,
        "EBAY_CLIENT_SECRET": EBAY_SECRET,
        "EBAY_REFRESH_TOKEN": EBAY_REFRESH,
        "EBAY_SEARCH_QUERIES": "steel mug,camping lantern",
        "EBAY_CATEGORY_IDS": "20005",
        "EBAY_REQUESTS_PER_SECOND": str(EBAY_RATE),
    }
    return {"servers": {"shopify": shopify, "shopify_eu": second, "amazon": amazon, "ebay": ebay}, "env": env}


def accounts_toml(started: dict) -> tuple[str, dict]:
    """An accounts file for the sandboxes (two shops, Amazon, eBay US and DE of one seller) and the
    variables its `env:` references read: the secrets stay out of the file."""
    servers, env = started["servers"], started["env"]
    text = f"""# The sandbox's accounts: secrets are references to variables, never values.
[[shopify]]
shop_domain = "{DEMO_SHOP}"
streams = ["products", "orders"]
client_id = "{DEMO_CLIENT_ID}"
client_secret = "env:DEMO_SHOPIFY_CLIENT_SECRET"
api_base_url = "{servers['shopify'].base_url}"

[[shopify]]
name = "eu-store"
streams = ["products", "orders"]
shop_domain = "{SECOND_SHOP}"
access_token = "env:DEMO_EU_SHOP_TOKEN"
api_base_url = "{servers['shopify_eu'].base_url}"

[[amazon]]
credential_id = "{AMAZON_ID}"
credential_secret = "env:DEMO_AMAZON_SECRET"
version = "3.1"
partner_tag = "{AMAZON_TAG}"
search_keywords = ["steel mug|HomeAndKitchen", "headphones"]
asins = "{env['AMAZON_ASINS']}"
api_base_url = "{env['AMAZON_API_BASE_URL']}"
token_url = "{env['AMAZON_TOKEN_URL']}"
requests_per_second = {AMAZON_RATE}

[[ebay]]
name = "us"
streams = ["products", "orders"]                # the seller's orders, whatever marketplace sold them
client_id = "{EBAY_ID}"
client_secret = "env:DEMO_EBAY_SECRET"
refresh_token = "env:DEMO_EBAY_REFRESH_TOKEN"
search_queries = ["steel mug", "camping lantern"]
category_ids = ["20005"]
api_base_url = "{env['EBAY_API_BASE_URL']}"
requests_per_second = {EBAY_RATE}

[[ebay]]
name = "de"
streams = ["products"]                          # the same seller: its orders come with "us"
marketplace_id = "EBAY_DE"
client_id = "{EBAY_ID}"
client_secret = "env:DEMO_EBAY_SECRET"
refresh_token = "env:DEMO_EBAY_REFRESH_TOKEN"
search_queries = ["steel mug"]
api_base_url = "{env['EBAY_API_BASE_URL']}"
requests_per_second = {EBAY_RATE}
"""
    secrets = {"DEMO_SHOPIFY_CLIENT_SECRET": DEMO_CLIENT_SECRET, "DEMO_EU_SHOP_TOKEN": SECOND_TOKEN,
               "DEMO_AMAZON_SECRET": AMAZON_SECRET, "DEMO_EBAY_SECRET": EBAY_SECRET,
               "DEMO_EBAY_REFRESH_TOKEN": EBAY_REFRESH}
    return text, secrets


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
    print(f"\n(a legacy custom app instead: unset SHOPIFY_CLIENT_ID SHOPIFY_CLIENT_SECRET; "
          f"export SHOPIFY_ACCESS_TOKEN={DEMO_TOKEN})")
    print("\nthen try:  .venv/bin/python pipelines/run_pipeline.py --dry-run --providers shopify --limit 10")
    print(f"change 3% of Shopify products:  curl -X POST {started['servers']['shopify'].base_url}/_sandbox/mutate "
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
