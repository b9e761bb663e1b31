"""The same job done the way a dlt user would (run with a Python that has dlt installed).

One @dlt.resource pages the GraphQL `products` query with the same product fields as ours and
`variants(first: 100)` (dlt has no nested paging), at the largest page size that fits Shopify's
1,000-point cap, yields pages, and loads them with the filesystem destination as Parquet.

Usage: python bench/dlt_products.py OUT_DIR   (SHOPIFY_API_BASE_URL, SHOPIFY_ACCESS_TOKEN set)
Prints one JSON line: products, variants, requests, page size.
"""

import json
import math
import os
import sys

import requests

VARIANT_FIELDS = "id sku barcode title price compareAtPrice inventoryQuantity availableForSale"
QUERY = """query Products($first: Int!, $after: String) {
  products(first: $first, after: $after, sortKey: UPDATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id title handle vendor productType status tags createdAt updatedAt onlineStoreUrl description totalInventory
      priceRangeV2 { minVariantPrice { amount currencyCode } maxVariantPrice { amount currencyCode } }
      featuredMedia { ... on MediaImage { image { url } } }
      variants(first: 100) { nodes { %s } }
    }
  }
}""" % VARIANT_FIELDS


def main(out: str) -> None:
    import dlt  # here, so the tests can read QUERY without dlt installed

    url = os.environ["SHOPIFY_API_BASE_URL"] + "/admin/api/2026-10/graphql.json"
    session = requests.Session()
    session.headers["X-Shopify-Access-Token"] = os.environ["SHOPIFY_ACCESS_TOKEN"]
    stats = {"requests": 0, "products": 0, "variants": 0}

    def post(first, after):
        stats["requests"] += 1
        body = session.post(url, json={"query": QUERY, "variables": {"first": first, "after": after}}).json()
        if body.get("errors"):
            raise RuntimeError(body["errors"])
        return body

    probe = post(1, None)  # one product's requested cost sets the largest page under the cap
    page_size = min(250, math.floor(1000 / probe["extensions"]["cost"]["requestedQueryCost"]))
    stats["page_size"] = page_size

    @dlt.resource(name="products", write_disposition="append")
    def products():
        after = None
        while True:
            connection = post(page_size, after)["data"]["products"]
            nodes = connection["nodes"]
            stats["products"] += len(nodes)
            stats["variants"] += sum(len(n["variants"]["nodes"]) for n in nodes)
            yield nodes
            if not connection["pageInfo"]["hasNextPage"]:
                return
            after = connection["pageInfo"]["endCursor"]

    pipeline = dlt.pipeline(pipeline_name="shopify_bench", pipelines_dir=os.path.join(out, "pipelines"),
                            destination=dlt.destinations.filesystem(bucket_url=os.path.join(out, "data")),
                            dataset_name="shop")
    pipeline.run(products(), loader_file_format="parquet")
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
