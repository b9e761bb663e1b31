"""Connectors: one module per provider, each with one generator of raw records."""

import sys

# requests-cache imports its DynamoDB backend, and with it boto3 (70 ms at every start), whenever
# boto3 is installed. The pipeline never uses that backend, and boto3 is there only for s3://
# destinations, imported when one is used: a local run starts as fast as before boto3 came.
sys.modules.setdefault("requests_cache.backends.dynamodb", None)

from connectors import amazon, ebay, shopify  # noqa: E402

CONNECTORS = {shopify.NAME: shopify, amazon.NAME: amazon, ebay.NAME: ebay}
