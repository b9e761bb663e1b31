"""A local eBay Browse API (item_summary/search), Sell Fulfillment API (getOrders) and OAuth
token endpoint.

Follows the repository's compact contracts (`sandbox/data/ebay_browse_contract.json` and
`ebay_fulfillment_contract.json`, derived from eBay's published OpenAPI contracts): the documented
parameter limits and error ids, optional fields sometimes absent, short-lived tokens, a request
rate it enforces with 429 (errorId 2001) apart from random faults, and a daily search quota.

Tokens: application tokens (client-credentials grant) for search, and user tokens minted from a
seller's refresh token (refresh-token grant) for orders. getOrders answers a seller's orders,
whatever marketplace the request names, and refuses an application token (errorId 1100).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from sandbox.ebay_orders import ORDERS_PATH, SCOPES as ORDER_SCOPES, OrderBook, get_orders
from sandbox.server import SandboxServer

CONTRACT = json.loads((Path(__file__).parent / "data" / "ebay_browse_contract.json").read_text())
SEARCH_PATH = CONTRACT["search_path"]
TOKEN_PATH = "/identity/v1/oauth2/token"
SCOPE = "https://api.ebay.com/oauth/api_scope"
MARKETPLACES = {"EBAY_US", "EBAY_GB", "EBAY_DE", "EBAY_AU", "EBAY_CA"}
MARKET_SITES = {"EBAY_US": ("USD", "www.ebay.com"), "EBAY_GB": ("GBP", "www.ebay.co.uk"),
                "EBAY_DE": ("EUR", "www.ebay.de"), "EBAY_AU": ("AUD", "www.ebay.com.au"),
                "EBAY_CA": ("CAD", "www.ebay.ca")}
POOL = 3000
CONDITIONS = [("New", "1000"), ("Used", "3000"), ("Open box", "1500")]


def _error(status: int, error_id: int, message: str, domain: str = "API_BROWSE", category: str = "REQUEST"):
    return status, {"errors": [{"errorId": error_id, "domain": domain, "category": category, "message": message}]}, {}


class EbaySandbox(SandboxServer):
    def __init__(self, *, client_id: str = "sandbox-client-id", client_secret: str = "sandbox-client-secret",
                 token_lifetime_s: float = 7200, requests_per_second: float = 5.0, daily_quota: int = 5000,
                 revoke_tokens_every: int | None = None, next_host: str | None = None,
                 clock=time.monotonic, port: int = 0, sellers: dict[str, str] | None = None, orders: int = 0,
                 granted_scopes: frozenset = ORDER_SCOPES, now=lambda: datetime.now(timezone.utc)):
        super().__init__(port=port)
        self.client_id, self.client_secret = client_id, client_secret
        self.token_lifetime_s, self.min_interval = token_lifetime_s, 1.0 / requests_per_second
        self.daily_quota, self.clock = daily_quota, clock
        self.revoke_tokens_every = revoke_tokens_every  # expire every token on each Nth search call
        self.next_host = next_host  # put next links on another host (a client must not follow with its token)
        self.api_calls = 0
        self.tokens: dict[str, float] = {}
        self.search_calls = self.rate_limited = self.minted = 0
        self.unknown_parameters: list[str] = []
        self.price_bump: dict[int, float] = {}
        self.last_accepted: float | None = None
        self._lock = threading.Lock()
        # Sellers: refresh token -> seller id, each with `orders` orders; the scopes their consent granted.
        self.sellers, self.granted_scopes, self.now = dict(sellers or {}), granted_scopes, now
        self.order_books = {seller: OrderBook(seller, orders, now()) for seller in set(self.sellers.values())}
        self.user_tokens: dict[str, tuple[str, float]] = {}  # user token -> (seller, expires at)
        self.user_minted = self.order_calls = 0

    # -- catalog -----------------------------------------------------------------------------
    def results(self, key: str) -> tuple[int, callable]:
        """(total, item id at position i) for a search: deterministic, overlapping across searches."""
        if "popular" in key:
            return 12_345, lambda i: POOL + i
        rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        ids = rng.sample(range(POOL), rng.randint(30, 450))
        return len(ids), lambda i: ids[i]

    def item(self, n: int, marketplace: str = "EBAY_US") -> dict:
        rng = random.Random(n)
        currency, site = MARKET_SITES.get(marketplace, ("USD", "www.ebay.com"))
        legacy = 135_000_000_000 + n
        value = round(3 + rng.random() * 300, 2) + self.price_bump.get(n, 0)
        condition, condition_id = CONDITIONS[n % len(CONDITIONS)]
        item = {
            "itemId": f"v1|{legacy}|0",
            "legacyItemId": str(legacy),
            "title": f"Steel Trail Mug {n} ({condition})"[:80],
            "price": {"value": f"{value:.2f}", "currency": currency},
            "condition": condition,
            "conditionId": condition_id,
            "itemWebUrl": f"https://{site}/itm/{legacy}",
            "itemHref": f"https://api.ebay.com/buy/browse/v1/item/v1%7C{legacy}%7C0",
            "seller": {"username": f"seller_{n % 97}", "feedbackScore": 10 + n % 5000},
            "buyingOptions": ["FIXED_PRICE"] + (["BEST_OFFER"] if n % 4 == 0 else []),
            "categories": [{"categoryId": str(20000 + n % 13), "categoryName": ["Mugs", "Bottles", "Camping"][n % 3]}],
            "itemCreationDate": f"2026-{1 + n % 10:02d}-{1 + n % 27:02d}T10:00:00.000Z",
            # These move on every read without the item changing:
            "itemAffiliateWebUrl": f"https://{site}/itm/{legacy}?mkrid=711&campid={secrets.randbelow(10**6)}",
            "shippingOptions": [{"shippingCostType": "FIXED", "shippingCost": {"value": "4.99", "currency": currency},
                                 "minEstimatedDeliveryDate": f"2026-12-{1 + secrets.randbelow(20):02d}T08:00:00.000Z"}],
        }
        if n % 8:
            item["seller"]["feedbackPercentage"] = f"{95 + (n % 50) / 10:.1f}"
        if n % 6:
            item["image"] = {"imageUrl": f"https://i.ebayimg.com/images/g/{n}/s-l225.jpg"}
        if n % 10:
            item["itemLocation"] = {"postalCode": "981**", "country": "US" if n % 3 else "GB"}
        if n % 3 == 0:
            item["epid"] = str(240_000_000 + n)
        return item

    def mutate(self, fraction: float, pool_ids: list[int]) -> list[str]:
        """Raise the price of `fraction` of the given item numbers; returns their itemIds."""
        rng = random.Random(len(pool_ids))
        chosen = rng.sample(sorted(pool_ids), max(1, round(fraction * len(pool_ids))))
        with self._lock:
            for n in chosen:
                self.price_bump[n] = self.price_bump.get(n, 0) + 1
        return [f"v1|{135_000_000_000 + n}|0" for n in chosen]

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens = {t: self.clock() - 1 for t in self.tokens}
            self.user_tokens = {t: (seller, self.clock() - 1) for t, (seller, _) in self.user_tokens.items()}

    def refund_orders(self, fraction: float, seed: int = 0) -> list[str]:
        """Refund a line of `fraction` of every seller's orders (lastModifiedDate moves to now)."""
        with self._lock:
            return [oid for book in self.order_books.values() for oid in book.refund(fraction, self.now(), seed)]

    def revoke(self, refresh_token: str) -> None:
        """The seller withdraws consent (or the token expires): the refresh grant answers invalid_grant."""
        with self._lock:
            self.sellers.pop(refresh_token, None)

    # -- the API -----------------------------------------------------------------------------
    def handle_api(self, method, path, headers, raw, query=None):
        if method == "POST" and path == TOKEN_PATH:
            return self._token(headers, raw)
        if method == "GET" and path == ORDERS_PATH:
            return self._orders(headers, query or {})
        if method != "GET" or path != SEARCH_PATH:
            return 404, {"errors": [{"errorId": 404, "message": "Not found"}]}, {}
        self.api_calls += 1
        if self.revoke_tokens_every and self.api_calls % self.revoke_tokens_every == 0:
            self.expire_tokens()
        header = headers.get("Authorization") or ""
        expires = self.tokens.get(header[len("Bearer "):]) if header.startswith("Bearer ") else None
        if expires is None or self.clock() >= expires:
            return _error(401, 1001, "Invalid access token", domain="OAuth")
        with self._lock:
            now = self.clock()
            if self.search_calls >= self.daily_quota or (
                    self.last_accepted is not None and now - self.last_accepted < self.min_interval * 0.9):
                self.rate_limited += 1
                return _error(429, 2001, "Too many requests.", domain="ACCESS")
            self.last_accepted = now
            self.search_calls += 1
        marketplace = headers.get("X-EBAY-C-MARKETPLACE-ID") or "EBAY_US"
        if marketplace not in MARKETPLACES:
            return _error(409, 12019, f"The {marketplace} marketplace is not supported.", category="BUSINESS")
        return self._search(query or {}, marketplace)

    def _orders(self, headers, query: dict):
        """getOrders for the seller whose user token this is; an application token is refused."""
        self.api_calls += 1
        if self.revoke_tokens_every and self.api_calls % self.revoke_tokens_every == 0:
            self.expire_tokens()
        header = headers.get("Authorization") or ""
        token = header[len("Bearer "):] if header.startswith("Bearer ") else None
        if token in self.tokens:  # an application token: it speaks for no seller
            return _error(403, 1100, "Access denied", domain="ACCESS")
        seller, expires = self.user_tokens.get(token, (None, None))
        if seller is None or self.clock() >= expires:
            return _error(401, 1001, "Invalid access token", domain="OAuth")
        with self._lock:
            now = self.clock()
            if self.last_accepted is not None and now - self.last_accepted < self.min_interval * 0.9:
                self.rate_limited += 1
                return _error(429, 2001, "Too many requests.", domain="ACCESS")
            self.last_accepted = now
            self.order_calls += 1
            return get_orders(self.order_books[seller], query, self.now(), self.base_url)

    def _token(self, headers, raw):
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if headers.get("Authorization") != f"Basic {expected}":
            return 401, {"error": "invalid_client", "error_description": "client authentication failed"}, {}
        fields = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        if fields.get("grant_type") == "refresh_token":
            return self._user_token(fields)
        if fields.get("grant_type") != "client_credentials" or fields.get("scope") != SCOPE:
            return 400, {"error": "invalid_scope", "error_description": "The requested scope is invalid"}, {}
        token = "v^1.1#i^1#sandbox" + secrets.token_hex(24)
        with self._lock:
            self.tokens[token] = self.clock() + self.token_lifetime_s
            self.minted += 1
        return 200, {"access_token": token, "expires_in": int(self.token_lifetime_s),
                     "token_type": "Application Access Token"}, {"kind": "token"}

    def _user_token(self, fields: dict):
        """The refresh-token grant: a two-hour user token for the seller who granted the refresh token."""
        seller = self.sellers.get(fields.get("refresh_token"))
        if seller is None:
            return 400, {"error": "invalid_grant", "error_description": "the provided authorization refresh token "
                         "is invalid or was issued to another client"}, {}
        asked = set((fields.get("scope") or "").split())
        if not asked or not asked <= self.granted_scopes:
            return 400, {"error": "invalid_scope", "error_description": "The requested scope is invalid, unknown, "
                         "malformed, or exceeds the scope granted to the client"}, {}
        token = "v^1.1#i^1#p^3#sandbox-user" + secrets.token_hex(24)
        with self._lock:
            self.user_tokens[token] = (seller, self.clock() + self.token_lifetime_s)
            self.user_minted += 1
        return 200, {"access_token": token, "expires_in": int(self.token_lifetime_s),
                     "token_type": "User Access Token"}, {"kind": "user_token"}

    def _search(self, query: dict, marketplace: str = "EBAY_US"):
        known = CONTRACT["parameters"]
        self.unknown_parameters += [name for name in query if known.get(name, {}).get("in") != "query"]
        q, category = query.get("q"), query.get("category_ids")
        if not q and not category and not query.get("epid") and not query.get("gtin"):
            return _error(400, 12001, "The call must have a valid 'q', 'category_ids', 'epid' or 'gtin' query parameter.")
        try:
            limit = int(query.get("limit", 50))
        except ValueError:
            return _error(400, 12007, "The 'limit' value must be an integer value.")
        try:
            offset = int(query.get("offset", 0))
        except ValueError:
            return _error(400, 12005, "The 'offset' value must be an integer.")
        if not 1 <= limit <= 200:
            return _error(400, 12006, "The 'limit' value should be between 1 and 200 (inclusive).")
        if offset < 0:
            return _error(400, 12004, "The 'offset' value cannot be negative.")
        if offset >= 10_000:
            return _error(400, 12029, "The offset value must be less than 10,000.")
        if offset % limit:
            return _error(400, 12515, "The 'offset' value must be zero or a multiple of 'limit'.")
        key = f"q:{q}" if q else f"category:{category.split(',')[0]}"
        if marketplace != "EBAY_US":  # each marketplace lists its own items (some of them also listed in the US)
            key = f"{marketplace}|{key}"
        total, item_at = self.results(key)
        page = [self.item(item_at(i), marketplace) for i in range(offset, min(offset + limit, total))]
        base = f"{self.next_host or self.base_url}{SEARCH_PATH}?"
        params = {k: v for k, v in query.items() if k not in ("offset",)}
        body = {"href": base + urlencode({**params, "offset": offset}), "total": total, "limit": limit,
                "offset": offset, "itemSummaries": page}
        if offset + limit < total:  # like eBay, it offers a next link even past the 10,000 window
            body["next"] = base + urlencode({**params, "offset": offset + limit})
        if not page:
            body.pop("itemSummaries")
        return 200, body, {"kind": "search"}
