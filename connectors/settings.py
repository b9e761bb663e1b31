"""The settings each connector reads: one frozen dataclass per provider account.

They live beside the connectors so that connectors never import the command (`pipelines/`); the
command builds them from the environment in `pipelines/config.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

# Shopify releases quarterly; 2026-10 is the newest stable version as of 2026-11.
DEFAULT_SHOPIFY_API_VERSION = "2026-10"
SHOP_DOMAIN_RE = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
API_VERSION_RE = re.compile(r"\d{4}-(01|04|07|10)|unstable")


@dataclass(frozen=True)
class ShopifySettings:
    """One shop and one of two ways in: a Dev Dashboard app's client id and secret (tokens minted
    with the client-credentials grant, about 24 hours each) or a legacy custom app's static token."""

    shop_domain: str
    api_version: str
    access_token: SecretStr | None  # SHOPIFY_ACCESS_TOKEN (shpat_...), or None with client credentials
    base_url: str  # scheme://host[:port], no trailing slash
    bulk_min_products: int = 10_000  # a first run over a shop this large uses a bulk operation (0: never)
    client_id: str | None = None  # SHOPIFY_CLIENT_ID
    client_secret: SecretStr | None = None  # SHOPIFY_CLIENT_SECRET
    name: str | None = None  # the account's name, when not its natural id (the shop domain)

    @property
    def account(self) -> str:
        return self.name or self.shop_domain

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/admin/api/{self.api_version}/graphql.json"

    @property
    def token_url(self) -> str:
        """The client-credentials token endpoint: on the API host, so SHOPIFY_API_BASE_URL moves it too."""
        return f"{self.base_url}/admin/oauth/access_token"


AMAZON_API_BASE_URL = "https://creatorsapi.amazon"
# Credential version -> (token URL, body style, scope). 2.x: Cognito with a form body; 3.x: Login
# with Amazon with a JSON body. Source: Amazon's creatorsapi-python-sdk 1.2.0 (auth/oauth2_config.py).
AMAZON_TOKEN_ENDPOINTS = {
    "2.1": ("https://creatorsapi.auth.us-east-1.amazoncognito.com/oauth2/token", "form", "creatorsapi/default"),
    "2.2": ("https://creatorsapi.auth.eu-south-2.amazoncognito.com/oauth2/token", "form", "creatorsapi/default"),
    "2.3": ("https://creatorsapi.auth.us-west-2.amazoncognito.com/oauth2/token", "form", "creatorsapi/default"),
    "3.1": ("https://api.amazon.com/auth/o2/token", "json", "creatorsapi::default"),
    "3.2": ("https://api.amazon.co.uk/auth/o2/token", "json", "creatorsapi::default"),
    "3.3": ("https://api.amazon.co.jp/auth/o2/token", "json", "creatorsapi::default"),
}
PAAPI_RETIRED = ("Amazon PA-API 5.0 was retired on 2026-05-15, so the AMAZON_PAAPI_* variables no longer work: "
                 "set AMAZON_CREATORS_CREDENTIAL_ID, AMAZON_CREATORS_CREDENTIAL_SECRET and AMAZON_CREATORS_VERSION "
                 "(from Associates Central, Creators API) and AMAZON_PARTNER_TAG instead")
ASIN_RE = re.compile(r"[A-Z0-9]{10}")
MARKETPLACE_RE = re.compile(r"www\.amazon\.[a-z.]{2,12}")


@dataclass(frozen=True)
class AmazonSettings:
    credential_id: str
    credential_secret: SecretStr
    version: str
    partner_tag: str
    marketplace: str
    searches: tuple[tuple[str, str | None], ...]  # (keywords, search index or None)
    asins: tuple[str, ...]
    base_url: str
    token_url: str
    requests_per_second: float
    name: str | None = None  # the account's name, when not its natural id (the marketplace)

    @property
    def account(self) -> str:
        return self.name or self.marketplace

    @property
    def token_style(self) -> str:
        return AMAZON_TOKEN_ENDPOINTS[self.version][1]

    @property
    def scope(self) -> str:
        return AMAZON_TOKEN_ENDPOINTS[self.version][2]


EBAY_API_BASE_URL = "https://api.ebay.com"
EBAY_MARKETPLACE_RE = re.compile(r"EBAY_[A-Z]{2}(_[A-Z]{2,6})?")


@dataclass(frozen=True)
class EbaySettings:
    client_id: str | None
    client_secret: SecretStr | None
    static_token: SecretStr | None  # EBAY_OAUTH_TOKEN: accepted, but it expires after about two hours
    marketplace: str
    queries: tuple[str, ...]
    category_ids: tuple[str, ...]
    filter: str | None
    daily_call_budget: int
    base_url: str
    requests_per_second: float
    calls_file: Path  # the keyset's call count for the day, shared by every run and account using it
    name: str | None = None  # the account's name, when not its natural id (the marketplace id)
    # EBAY_REFRESH_TOKEN: the seller's consent to this keyset, from which the orders stream mints
    # user tokens. Orders belong to the seller, so accounts sharing it are one seller.
    refresh_token: SecretStr | None = None

    @property
    def account(self) -> str:
        return self.name or self.marketplace

    @property
    def search_url(self) -> str:
        return f"{self.base_url}/buy/browse/v1/item_summary/search"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/identity/v1/oauth2/token"

    @property
    def orders_url(self) -> str:
        return f"{self.base_url}/sell/fulfillment/v1/order"
