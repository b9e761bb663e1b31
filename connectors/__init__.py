"""Connectors: one module per provider, each with one generator of raw records."""

from connectors import shopify

CONNECTORS = {shopify.NAME: shopify}
