"""Connectors: one module per provider, each with one generator of raw records.

A provider's modules are imported when a run uses them (pipelines/streams.py): a Shopify run
loads no Amazon or eBay code, and `--help` or a settings error loads no HTTP library.
"""

import sys

# requests-cache imports its DynamoDB backend, and with it boto3 (70 ms at every start), whenever
# boto3 is installed. The pipeline never uses that backend, and boto3 is there only for s3://
# destinations, imported when one is used: a local run starts as fast as before boto3 came.
sys.modules.setdefault("requests_cache.backends.dynamodb", None)

# provider -> its module
CONNECTORS = {"shopify": "connectors.shopify", "amazon": "connectors.amazon", "ebay": "connectors.ebay"}
