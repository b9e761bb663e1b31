"""A local Amazon Creators API: both token endpoints, searchItems and getItems, with the request
validation the SDK documents, partial errors, token expiry, and a request rate it enforces with 429.

The pipeline reaches it through AMAZON_API_BASE_URL and AMAZON_TOKEN_URL, with ordinary credentials.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import secrets
import threading
import time
from urllib.parse import parse_qs

from sandbox.server import SandboxServer

COGNITO_PATH = "/oauth2/token"  # credential versions 2.x: form body, scope creatorsapi/default
LWA_PATH = "/auth/o2/token"  # credential versions 3.x: JSON body, scope creatorsapi::default
BRANDS = ["Acme", "Northwind", "Globex", None]
NOUNS = ["Mug", "Bottle", "Headphones", "Lantern", "Blanket", "Kettle"]


def _error(status: int, type_: str, message: str, reason: str | None = None, **extra):
    body = {"type": type_, "message": message, **extra}
    if reason:
        body["reason"] = reason
    return status, body, {}


class AmazonSandbox(SandboxServer):
    def __init__(self, *, credential_id: str = "sandbox-credential-id",
                 credential_secret: str = "sandbox-credential-secret", partner_tag: str = "sandbox-20",
                 token_lifetime_s: float = 3600, requests_per_second: float = 1.0, pool_size: int = 120,
                 revoke_tokens_every: int | None = None, clock=time.monotonic, port: int = 0):
        super().__init__(port=port)
        self.credential_id, self.credential_secret, self.partner_tag = credential_id, credential_secret, partner_tag
        self.token_lifetime_s, self.min_interval = token_lifetime_s, 1.0 / requests_per_second
        self.clock = clock
        self.revoke_tokens_every = revoke_tokens_every  # expire every token on each Nth API call
        self.api_calls = 0
        self.tokens: dict[str, tuple[float, str | None]] = {}  # token -> (expires at, version or None)
        self.items = {item["asin"]: item for item in (_item(i) for i in range(pool_size))}
        self.last_accepted: float | None = None
        self.rate_limited = 0
        self.minted = 0
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------------------
    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens = {t: (self.clock() - 1, v) for t, (_, v) in self.tokens.items()}

    def search_results(self, keywords: str) -> list[str]:
        """The ASINs a search returns, in order: deterministic per keywords, overlapping across searches."""
        seed = int(hashlib.sha256(keywords.lower().encode()).hexdigest()[:8], 16)
        rng = random.Random(seed)
        count = 0 if "nothing" in keywords.lower() else rng.randint(5, min(45, len(self.items)))
        return rng.sample(sorted(self.items), count)

    # -- the API -----------------------------------------------------------------------------
    def handle_api(self, method, path, headers, raw, query=None):
        if method == "POST" and path in (COGNITO_PATH, LWA_PATH):
            return self._token(path, headers, raw)
        if method != "POST" or path not in ("/catalog/v1/searchItems", "/catalog/v1/getItems"):
            return _error(404, "UnknownOperationException", "Unknown operation", "UnknownOperation")
        self.api_calls += 1
        if self.revoke_tokens_every and self.api_calls % self.revoke_tokens_every == 0:
            self.expire_tokens()  # the server decides a token is stale before the client expected
        problem = self._authorize(headers.get("Authorization"))
        if problem:
            return problem
        with self._lock:
            now = self.clock()
            if self.last_accepted is not None and now - self.last_accepted < self.min_interval * 0.9:
                self.rate_limited += 1
                return _error(429, "ThrottleException", "Rate exceeded", serviceCode="creatorsapi",
                              quotaCode="requests-per-second")
            self.last_accepted = now
        if not headers.get("x-marketplace"):
            return _error(400, "ValidationException", "The x-marketplace header is required.",
                          "FieldValidationFailed", fieldList=["x-marketplace"])
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "ValidationException", "The request body could not be parsed.", "CannotParse")
        if body.get("partnerTag") != self.partner_tag:
            return _error(400, "ValidationException", "The partner tag is invalid for this account.", "InvalidPartnerTag",
                          fieldList=["partnerTag"])
        if path.endswith("searchItems"):
            return self._search(body)
        return self._get_items(body)

    def _token(self, path, headers, raw):
        try:
            fields = (json.loads(raw) if path == LWA_PATH
                      else {k: v[0] for k, v in parse_qs(raw.decode()).items()})
        except ValueError:
            return 400, {"error": "invalid_request"}, {}
        scope = "creatorsapi::default" if path == LWA_PATH else "creatorsapi/default"
        if fields.get("grant_type") != "client_credentials" or fields.get("scope") != scope:
            return 400, {"error": "invalid_request", "error_description": f"expected client_credentials and scope {scope}"}, {}
        if fields.get("client_id") != self.credential_id or fields.get("client_secret") != self.credential_secret:
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}, {}
        token = "sandbox-amz-" + secrets.token_hex(16)
        with self._lock:
            self.tokens[token] = (self.clock() + self.token_lifetime_s, None if path == LWA_PATH else "2.")
            self.minted += 1
        return 200, {"access_token": token, "expires_in": int(self.token_lifetime_s), "token_type": "bearer"}, {"kind": "token"}

    def _authorize(self, header: str | None):
        if not header or not header.startswith("Bearer "):
            return _error(401, "UnauthorizedException", "Missing credentials.", "MissingCredential")
        token, _, version = header[len("Bearer "):].partition(", Version ")
        known = self.tokens.get(token)
        if known is None:
            return _error(401, "UnauthorizedException", "The access token is invalid.", "InvalidToken")
        expires_at, needs_version = known
        if needs_version and not version.startswith(needs_version):
            return _error(401, "UnauthorizedException", "Version is required for this credential.", "InvalidToken")
        if self.clock() >= expires_at:
            return _error(401, "UnauthorizedException", "The access token has expired.", "TokenExpired")
        return None

    def _search(self, body):
        page, count = body.get("itemPage", 1), body.get("itemCount", 10)
        if not body.get("keywords"):
            return _error(400, "ValidationException", "keywords is required.", "FieldValidationFailed", fieldList=["keywords"])
        bad = [name for name, value in (("itemPage", page), ("itemCount", count))
               if not isinstance(value, int) or not 1 <= value <= 10]
        if bad:
            return _error(400, "ValidationException", f"{bad[0]} must be between 1 and 10.", "FieldValidationFailed",
                          fieldList=bad)
        asins = self.search_results(body["keywords"])
        if not asins:
            return _error(404, "ResourceNotFoundException", "No results found for the request.", "NoResults")
        window = asins[(page - 1) * count: page * count]
        return 200, {"searchResult": {"totalResultCount": len(asins), "items": [self.items[a] for a in window],
                                      "searchURL": "https://www.amazon.com/s?k=" + body["keywords"].replace(" ", "+")}}, \
            {"kind": "search"}

    def _get_items(self, body):
        ids = body.get("itemIds")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 10:
            return _error(400, "ValidationException", "itemIds must hold 1 to 10 ASINs.", "FieldValidationFailed",
                          fieldList=["itemIds"])
        found = [self.items[a] for a in ids if a in self.items]
        answer = {"itemsResult": {"items": found}}
        missing = [a for a in ids if a not in self.items]
        if missing:
            answer["errors"] = [{"code": "InvalidParameterValue",
                                 "message": f"The ItemId {a} provided in the request is invalid."} for a in missing]
        return 200, answer, {"kind": "getItems"}

    def mutate(self, fraction: float) -> list[str]:
        """Raise the price of `fraction` of the items; returns their ASINs."""
        with self._lock:
            rng = random.Random(len(self.items))
            asins = sorted(rng.sample(sorted(self.items), math.ceil(fraction * len(self.items))))
            for asin in asins:
                for listing in self.items[asin].get("offersV2", {}).get("listings", []):
                    money = listing["price"]["money"]
                    money["amount"] = round(money["amount"] + 1, 2)
                    money["displayAmount"] = f"${money['amount']:.2f}"
        return asins


def _item(i: int) -> dict:
    asin = "B0" + hashlib.sha256(f"asin-{i}".encode()).hexdigest()[:8].upper()
    brand = BRANDS[i % len(BRANDS)] if i % 5 else None
    title = f"{brand or 'Generic'} {NOUNS[i % len(NOUNS)]} {i}"
    item = {
        "asin": asin,
        "detailPageURL": f"https://www.amazon.com/dp/{asin}?tag=sandbox-20",
        "itemInfo": {
            "title": {"displayValue": title, "label": "Title", "locale": "en_US"},
            "features": {"displayValues": [f"Feature {n} of item {i}" for n in range(2)]},
            "classifications": {"productGroup": {"displayValue": "Home"}},
        },
        "browseNodeInfo": {"browseNodes": [{"id": str(1000 + i % 7), "displayName": NOUNS[i % len(NOUNS)] + "s",
                                            "contextFreeName": NOUNS[i % len(NOUNS)] + "s", "isRoot": False}]},
    }
    if brand:
        item["itemInfo"]["byLineInfo"] = {"brand": {"displayValue": brand}}
    if i % 3 == 0:
        item["itemInfo"]["externalIds"] = {"eans": {"displayValues": [f"{4000000000000 + i}"]}}
    if i % 7:
        item["images"] = {"primary": {"large": {"url": f"https://m.media-amazon.com/images/I/{asin}._SL500_.jpg",
                                                "height": 500, "width": 500}}}
    if i % 9:
        amount = round(5 + (i * 37 % 20000) / 100, 2)
        listings = [{"price": {"money": {"amount": amount, "currency": "USD", "displayAmount": f"${amount:.2f}"}},
                     "availability": {"type": "IN_STOCK", "message": "In Stock"},
                     "condition": {"value": "New"}, "merchantInfo": {"name": "Amazon.com", "id": "ATVPDKIKX0DER"},
                     "isBuyBoxWinner": True}]
        if i % 4 == 0:  # a second, losing offer listed first
            listings.insert(0, {"price": {"money": {"amount": amount + 3, "currency": "USD"}},
                                "condition": {"value": "Used"}, "merchantInfo": {"name": "Reseller"},
                                "isBuyBoxWinner": False})
        item["offersV2"] = {"listings": listings}
    return item
