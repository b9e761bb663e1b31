"""Connectors: one module per provider, each with one generator of raw records."""

from connectors import amazon, ebay, shopify

CONNECTORS = {shopify.NAME: shopify, amazon.NAME: amazon, ebay.NAME: ebay}
