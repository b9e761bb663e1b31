"""How the Shopify connector gets into a shop; every Shopify stream and account builds its auth here.

Two ways in, one per shop:
- a Dev Dashboard app (the only kind a merchant can create since 2026-01-01) of the shop's own
  organization, installed on the shop: its client id and secret are exchanged for a token with the
  OAuth client-credentials grant (shopify.dev, "Using the client credentials grant"). The token
  lasts about 24 hours, so a long bulk download or a large crawl outlives it: it is minted when
  first needed, kept in memory only, and re-minted shortly before it expires and once after a 401;
- a legacy custom app's static Admin API token (`shpat_...`), which keeps working.
Either way the token travels as `X-Shopify-Access-Token`, and only to the configured API host.
"""

from __future__ import annotations

import logging
import time

from connectors.http import HostBoundHeaderAuth, HttpClient, ResponseError
from connectors.oauth import ClientCredentialsAuth, MissingScope, TokenRefused, request_token
from connectors.redact import remember
from connectors.settings import ShopifySettings

log = logging.getLogger("pipeline.shopify")

NAME = "shopify"
HEADER = "X-Shopify-Access-Token"
DEFAULT_LIFETIME_S = 24 * 3600  # an answer without expires_in: Shopify's tokens last about 24 hours
# A write scope grants read access to the same resource, so either one lets us read products.
PRODUCT_SCOPES = ("read_products", "write_products")
# The OAuth errors Shopify's token endpoint answers with HTTP 400 besides a refused client:
# app_not_installed (Shopify/shopify-api-ruby#1322) and shop_not_permitted, for a shop outside the
# app's organization (community.shopify.dev "Client credentials oauth flow from partner app not working").
NOT_INSTALLED, NOT_PERMITTED = "app_not_installed", "shop_not_permitted"


def make_auth(http: HttpClient, shop: ShopifySettings, clock=time.monotonic, *, scopes=PRODUCT_SCOPES):
    """The requests auth for `shop`: minted client-credentials tokens holding one of `scopes`,
    or the static token."""
    if shop.client_id is None:
        return HostBoundHeaderAuth(shop.base_url, HEADER, shop.access_token.get_secret_value)
    return ClientCredentialsAuth(shop.base_url, _Minter(http, shop, scopes), lambda token: token, clock,
                                 header_name=HEADER)


class _Minter:
    """One client-credentials exchange per call, its answer checked and its refusals explained."""

    def __init__(self, http: HttpClient, shop: ShopifySettings, scopes: tuple[str, ...]):
        self.http, self.shop, self.scopes = http, shop, scopes
        self.assumed_lifetime = False
        self.minted = 0
        self.granted: set[str] | None = None  # the scopes the last token holds, when Shopify said

    def __call__(self) -> dict:
        form = {"grant_type": "client_credentials", "client_id": self.shop.client_id,
                "client_secret": self.shop.client_secret.get_secret_value()}
        try:
            body = request_token(self.http, self.shop.token_url, data=form)
        except TokenRefused as exc:
            raise TokenRefused(NAME, _refusal(exc.error_code, self.shop.shop_domain), status=exc.status,
                               request_id=exc.request_id, error_code=exc.error_code) from None
        if not isinstance(body, dict):
            raise ResponseError(NAME, "the token endpoint's answer was not a JSON object")
        if isinstance(body.get("access_token"), str):
            remember(body["access_token"])  # before any check below can fail with it in hand
        granted = self._check_scope(body.get("scope"))
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, (int, float)) or expires_in <= 0:
            if not self.assumed_lifetime:
                log.info("shopify: the token endpoint gave no expires_in; the token is taken to last 24 hours")
                self.assumed_lifetime = True
            body = {**body, "expires_in": DEFAULT_LIFETIME_S}
        self.minted += 1
        log.info("shopify: %s from SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET (scope %s; valid %ss)",
                 "minted an access token" if self.minted == 1 else "re-minted the access token",
                 granted, f"{body['expires_in']:g}")
        return body

    def _check_scope(self, scope) -> str:
        """The granted scopes as Shopify wrote them; raises MissingScope if none of ours is there."""
        if not isinstance(scope, str):
            return "not stated"  # nothing to judge by: the API's ACCESS_DENIED will say it if it must
        granted = {s.strip() for s in scope.split(",") if s.strip()}
        self.granted = granted
        if not granted & set(self.scopes):
            raise MissingScope(
                NAME, f"the app's access token lacks the {self.scopes[0]} scope (granted: "
                f"{', '.join(sorted(granted)) or 'none'}): add {self.scopes[0]} to the access scopes of the "
                f"app's version in the Dev Dashboard, release it, and install the app on {self.shop.shop_domain} again")
        return scope[:200]


def _refusal(code: str | None, shop: str) -> str:
    """What a person should check when the token endpoint says no."""
    if code == NOT_INSTALLED:
        return (f"the app of SHOPIFY_CLIENT_ID is not installed on {shop} ({code}): install it on this shop "
                "from the Dev Dashboard, or check SHOPIFY_SHOP_DOMAIN and SHOPIFY_CLIENT_ID")
    if code == NOT_PERMITTED:
        return (f"Shopify does not permit the client-credentials grant on {shop} ({code}): it serves only apps "
                "of the shop's own organization. Check that the app of SHOPIFY_CLIENT_ID belongs to this "
                "store's organization, or use a legacy custom app's SHOPIFY_ACCESS_TOKEN")
    return (f"the token endpoint refused the client credentials{f' ({code})' if code else ''}: check "
            "SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET against the app's Settings page in the Dev Dashboard "
            "(a rotated secret must be changed here too)")
