"""Product catalogs from Shopify, Amazon and eBay into one deduplicated Parquet dataset."""

__version__ = "0.1.0"
