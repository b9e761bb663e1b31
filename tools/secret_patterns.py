"""detect-secrets plugins for the credentials this project handles that detect-secrets misses.

detect-secrets 1.5 ships no detector for Shopify Admin tokens or eBay OAuth tokens; these add them.
"""

import re

from detect_secrets.plugins.base import RegexBasedDetector


class ShopifyTokenDetector(RegexBasedDetector):
    """Shopify access tokens, shared secrets and app tokens: shpat_, shpss_, shpca_, shppa_ + 32 hex."""

    secret_type = "Shopify token"
    denylist = [re.compile(r"\bshp(?:at|ss|ca|pa)_[0-9a-fA-F]{32}\b")]


class EbayTokenDetector(RegexBasedDetector):
    """eBay OAuth user and application tokens, which start with v^1.1#i^1#."""

    secret_type = "eBay OAuth token"
    denylist = [re.compile(r"v\^1\.1#i\^1#[A-Za-z0-9#^+/=_.-]{20,}")]
