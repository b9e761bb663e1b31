"""Amazon products over the Creators API (the successor of PA-API 5.0, retired 2026-05-15).

Yields one raw item at a time: every configured search (searchItems, pages 1..10) and every
configured ASIN (getItems, in batches of 10). An ASIN found twice is yielded once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from collections.abc import Iterator

from connectors.cursors import no_cursor as record_cursor  # noqa: F401 - no change feed: read in full
from connectors.http import HttpClient, HttpSettings, ResponseError
from connectors.oauth import ClientCredentialsAuth, request_with_refresh
from connectors.settings import AmazonSettings

NAME = "amazon"
SEARCH_PATH = "/catalog/v1/searchItems"
GET_ITEMS_PATH = "/catalog/v1/getItems"
ITEMS_PER_PAGE = 10
MAX_PAGES = 10  # itemPage runs 1..10
ASINS_PER_CALL = 10
RESOURCES = [
    "itemInfo.title",
    "itemInfo.byLineInfo",
    "itemInfo.features",
    "itemInfo.classifications",
    "itemInfo.externalIds",
    "images.primary.large",
    "offersV2.listings.price",
    "offersV2.listings.availability",
    "offersV2.listings.condition",
    "offersV2.listings.merchantInfo",
    "offersV2.listings.isBuyBoxWinner",
    "browseNodeInfo.browseNodes",
]

log = logging.getLogger("pipeline.amazon")


def make_client(settings: AmazonSettings, http_settings: HttpSettings, counters=None, **kwargs) -> HttpClient:
    """An HttpClient paced at the account's request rate (no shared daily budget: `counters` is unused)."""
    return HttpClient(NAME, replace(http_settings, requests_per_second=settings.requests_per_second), **kwargs)


def make_auth(http: HttpClient, settings: AmazonSettings, clock=time.monotonic) -> ClientCredentialsAuth:
    """Client-credentials tokens; the header format follows the credential version."""

    def mint() -> dict:
        fields = {"grant_type": "client_credentials", "client_id": settings.credential_id,
                  "client_secret": settings.credential_secret.get_secret_value(), "scope": settings.scope}
        if settings.token_style == "json":  # Login with Amazon (3.x)
            return http.request_json("POST", settings.token_url, json_body=fields, cache=False)
        return http.request_json("POST", settings.token_url, data=fields, cache=False)  # Cognito (2.x)

    def header(token: str) -> str:
        return f"Bearer {token}" if settings.version.startswith("3.") else f"Bearer {token}, Version {settings.version}"

    return ClientCredentialsAuth(settings.base_url, mint, header, clock)


def iter_records(http: HttpClient, settings: AmazonSettings, *, clock=time.monotonic, **_) -> Iterator[dict]:
    """Yield each item of every configured search and ASIN batch, each ASIN once."""
    api = _CatalogApi(http, settings, make_auth(http, settings, clock))
    seen: set[str] = set()
    for keywords, search_index in settings.searches:
        for item in api.search(keywords, search_index):
            if _first_time(item, seen):
                yield item
    for start in range(0, len(settings.asins), ASINS_PER_CALL):
        for item in api.get_items(list(settings.asins[start:start + ASINS_PER_CALL])):
            if _first_time(item, seen):
                yield item


def _first_time(item, seen: set[str]) -> bool:
    asin = item.get("asin") if isinstance(item, dict) else None
    if asin is None:
        return True  # malformed: let the normalizer quarantine it
    if asin in seen:
        return False
    seen.add(asin)
    return True


class _CatalogApi:
    def __init__(self, http: HttpClient, settings: AmazonSettings, auth: ClientCredentialsAuth):
        self.http, self.settings, self.auth = http, settings, auth
        self.headers = {"x-marketplace": settings.marketplace, "Content-Type": "application/json; charset=utf-8"}

    def search(self, keywords: str, search_index: str | None) -> Iterator[dict]:
        """searchItems pages 1..10, stopping at the first short page."""
        for page in range(1, MAX_PAGES + 1):
            body = {"keywords": keywords, "itemCount": ITEMS_PER_PAGE, "itemPage": page,
                    "partnerTag": self.settings.partner_tag, "resources": RESOURCES}
            if search_index:
                body["searchIndex"] = search_index
            answer = self._post(SEARCH_PATH, body, f"search {keywords!r} page {page}")
            result = answer.get("searchResult") or {}
            items = result.get("items") or []
            yield from items
            total = result.get("totalResultCount")
            if len(items) < ITEMS_PER_PAGE or (isinstance(total, int) and page * ITEMS_PER_PAGE >= total):
                return

    def get_items(self, asins: list[str]) -> list[dict]:
        body = {"itemIds": asins, "partnerTag": self.settings.partner_tag, "resources": RESOURCES}
        answer = self._post(GET_ITEMS_PATH, body, f"getItems {','.join(asins)}")
        return (answer.get("itemsResult") or {}).get("items") or []

    def _post(self, path: str, body: dict, what: str) -> dict:
        try:
            answer = request_with_refresh(self.http, self.auth, "POST", self.settings.base_url + path,
                                          json_body=body, headers=self.headers, check=_check)
        except ResponseError as exc:
            if exc.status == 404:  # the Creators API answers 404 when a search has no results
                return {}
            raise
        for error in answer.get("errors") or []:  # partial errors beside results: counted, not fatal
            self.http.stats.partial_errors += 1
            if isinstance(error, dict):
                log.warning("amazon: %s: %s: %s", what, error.get("code"), str(error.get("message"))[:200])
        return answer


def _check(body, response) -> None:
    if not isinstance(body, dict):
        raise ResponseError(NAME, "the answer was not a JSON object")
