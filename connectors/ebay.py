"""eBay items over the Browse API's item_summary/search (the Finding API was shut down 2025-02-05).

Yields one raw item summary at a time: every configured keyword search and every configured
category (eBay honours one category per call), offset-paged within eBay's 10,000-item window.
An item found by two searches is yielded once. Calls are counted against a daily budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from urllib.parse import urlsplit

from connectors.cursors import no_cursor as record_cursor  # noqa: F401 - no change feed: read in full
from connectors.http import (
    AuthError,
    HostBoundHeaderAuth,
    HttpClient,
    HttpSettings,
    ProviderError,
    QuotaExhausted,
    ResponseError,
    RetryableError,
)
from connectors.oauth import ClientCredentialsAuth, request_with_refresh
from connectors.settings import EbaySettings
from storage.budget import DailyCallBudget

NAME = "ebay"
PAGE_LIMIT = 200  # the largest page eBay serves (limit 1..200)
MAX_RESULTS = 10_000  # a search serves at most 10,000 items: offset + limit may not pass it
SCOPE = "https://api.ebay.com/oauth/api_scope"
RATE_LIMITED = 2001  # eBay's "Too many requests" errorId

log = logging.getLogger("pipeline.ebay")


class NothingToSearch(ProviderError):
    """The account has no search configured, so the products stream has nothing to ask for."""


def make_client(settings: EbaySettings, http_settings: HttpSettings, counters=None, **kwargs) -> HttpClient:
    """An HttpClient paced at EBAY_REQUESTS_PER_SECOND that counts searches against the daily budget,
    kept by the destination's `counters` (shared by every worker using the keyset), else in the
    settings' local calls file."""
    now = kwargs.get("now") or (lambda: datetime.now(timezone.utc))
    today = lambda: now().date()  # noqa: E731
    budget = (counters.daily_budget(settings.calls_file.name, settings.daily_call_budget, today) if counters
              else DailyCallBudget(settings.calls_file, settings.daily_call_budget, today=today))

    def count_call(request) -> None:  # a prepared request, before it is sent
        if request.url.startswith(settings.search_url) and not budget.spend():
            raise QuotaExhausted(NAME, f"the daily call budget of {settings.daily_call_budget} "
                                 f"(EBAY_DAILY_CALL_BUDGET) is spent for {now().date()} UTC; what was "
                                 "fetched is kept and the next UTC day starts a new budget")

    paced = replace(http_settings, requests_per_second=settings.requests_per_second)
    return HttpClient(NAME, paced, on_send=count_call, **kwargs)


def iter_records(http: HttpClient, settings: EbaySettings, *, clock=time.monotonic, **_) -> Iterator[dict]:
    """Yield each item of every configured search, each item once, until a quota stops us."""
    searches = [{"q": q} for q in settings.queries] + [{"category_ids": c} for c in settings.category_ids]
    if not searches:  # an account set up for its seller's orders only
        raise NothingToSearch(NAME, f"account {settings.account!r} has no search for the products stream: set "
                                    "EBAY_SEARCH_QUERIES or EBAY_CATEGORY_IDS (search_queries or category_ids in "
                                    "the accounts file), or ask this account for orders only")
    api = _BrowseApi(http, settings, clock)
    seen: set[str] = set()
    try:
        for search in searches:
            for item in api.search(search):
                item_id = item.get("itemId") if isinstance(item, dict) else None
                if item_id is not None and item_id in seen:
                    continue
                if item_id is not None:
                    seen.add(item_id)
                yield item
    except QuotaExhausted as exc:
        http.stats.partial_reason = str(exc).split(": ", 1)[-1]
        log.warning("ebay: stopped early: %s", http.stats.partial_reason)


class _BrowseApi:
    def __init__(self, http: HttpClient, settings: EbaySettings, clock):
        self.http, self.settings = http, settings
        self.headers = {"X-EBAY-C-MARKETPLACE-ID": settings.marketplace, "Accept": "application/json"}
        self.rate_limited_in_a_row = 0
        if settings.static_token is not None:
            log.warning("ebay: EBAY_OAUTH_TOKEN is an application token that expires about two hours after it "
                        "was minted; a run after that fails. Set EBAY_CLIENT_ID and EBAY_CLIENT_SECRET instead "
                        "and the pipeline mints its own tokens.")
            self.auth = HostBoundHeaderAuth(settings.base_url, "Authorization",
                                            lambda: f"Bearer {settings.static_token.get_secret_value()}")
        else:
            self.auth = ClientCredentialsAuth(settings.base_url, self._mint, lambda t: f"Bearer {t}", clock)

    def _mint(self) -> dict:
        # eBay answers token_type "Application Access Token"; it is sent as a Bearer token all the same.
        return self.http.request_json(
            "POST", self.settings.token_url, data={"grant_type": "client_credentials", "scope": SCOPE},
            auth=(self.settings.client_id, self.settings.client_secret.get_secret_value()), cache=False)

    def search(self, search: dict) -> Iterator[dict]:
        """One search, 200 at a time, never past eBay's 10,000-item window."""
        params = {**search, "limit": PAGE_LIMIT, "offset": 0}
        if self.settings.filter:
            params["filter"] = self.settings.filter
        url, offset = self.settings.search_url, 0
        while True:
            page = self._get(url, params)
            items = page.get("itemSummaries") or []
            yield from items
            total = page.get("total") if isinstance(page.get("total"), int) else 0
            offset += PAGE_LIMIT
            if len(items) < PAGE_LIMIT or offset >= total or not page.get("next"):
                return
            if offset + PAGE_LIMIT > MAX_RESULTS:  # eBay would answer the next link with error 12029
                self._truncated(search, total)
                return
            url, params = self._next(page["next"], params, offset)

    def _next(self, link: str, params: dict, offset: int) -> tuple[str, dict | None]:
        """Follow eBay's next link when it is on the configured host; otherwise page by offset."""
        if urlsplit(link).netloc.lower() == urlsplit(self.settings.base_url).netloc.lower():
            return link, None
        return self.settings.search_url, {**params, "offset": offset}

    def _truncated(self, search: dict, total: int) -> None:
        what = " ".join(f"{k}={v!r}" for k, v in search.items())
        note = (f"search {what} matched about {total:,} items but eBay serves at most {MAX_RESULTS:,} per "
                f"search, so about {total - MAX_RESULTS:,} were not fetched: split it with EBAY_CATEGORY_IDS "
                "or an EBAY_FILTER price range")
        self.http.stats.warnings.append(note)
        log.warning("ebay: %s", note)

    def _get(self, url: str, params: dict | None) -> dict:
        try:
            if isinstance(self.auth, ClientCredentialsAuth):
                return request_with_refresh(self.http, self.auth, "GET", url, params=params,
                                            headers=self.headers, check=self._check)
            return self.http.request_json("GET", url, params=params, headers=self.headers,
                                          auth=self.auth, check=self._check)
        except AuthError as exc:
            if self.settings.static_token is not None and exc.status == 401:
                raise AuthError(NAME, "EBAY_OAUTH_TOKEN was refused: eBay application tokens expire about two "
                                "hours after they are minted. Set EBAY_CLIENT_ID and EBAY_CLIENT_SECRET so the "
                                "pipeline mints its own", status=401, request_id=exc.request_id) from None
            raise

    def _check(self, body, response) -> None:
        """One 2001 is a rate limit worth a retry; two in a row mean the day's quota is spent."""
        if response.status_code == 429:
            if RATE_LIMITED in _error_ids(body):
                self.rate_limited_in_a_row += 1
                if self.rate_limited_in_a_row >= 2:
                    raise QuotaExhausted(NAME, "eBay answered 'too many requests' (errorId 2001) twice in a row: "
                                         "the application's call quota looks spent")
            raise RetryableError(NAME, "too many requests (errorId 2001)", throttled=True, status=429)
        self.rate_limited_in_a_row = 0
        if not isinstance(body, dict):
            raise ResponseError(NAME, "the answer was not a JSON object")


def _error_ids(body) -> set:
    errors = body.get("errors") if isinstance(body, dict) else None
    return {e.get("errorId") for e in errors if isinstance(e, dict)} if isinstance(errors, list) else set()
