"""eBay orders over the Sell Fulfillment API's getOrders, with the seller's user token.

Yields one order at a time, changed since the high-water mark less the lookback, offset-paged
200 at a time to the end. Orders belong to the seller the refresh token stands for, whatever
marketplace the account is set to, so one account per seller runs this stream (pipelines/config.py).

Buyer details never leave this module: each order is cut down to the fields below before it is
yielded (the raw record is hashed and may be quarantined), so the buyer, the shipping addresses
(fulfillmentStartInstructions), checkout notes, payments and taxes are dropped here. The answers
themselves are never cached, since they carry all of that.

Paging: getOrders answers in creation order by default and an order never leaves the
`lastmodifieddate:[from..]` set (its date only grows), so offsets do not shift under a crawl.
An order whose lastModifiedDate is after the crawl started is left for the next run: the mark
then never passes the crawl's start, and whatever changed during the crawl is read again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from connectors.cursors import ebay_order_cursor as record_cursor
from connectors.ebay import make_client  # noqa: F401 - one client per keyset, whatever the stream
from connectors.http import AuthError, HttpClient, ResponseError, RetryableError
from connectors.oauth import ClientCredentialsAuth, MissingScope, TokenRefused, request_token, request_with_refresh
from connectors.settings import EbaySettings

log = logging.getLogger("pipeline.ebay")

NAME = "ebay"
PAGE_LIMIT = 200  # getOrders refuses a larger limit (errorId 31100)
HISTORY = timedelta(days=730)  # getOrders serves orders up to two years old
USER_SCOPE = "https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly"
REFRESH_TOKEN_HOME = "EBAY_REFRESH_TOKEN (or what the account's refresh_token refers to in the accounts file)"

# What is kept of an order, the fields the normalizer reads: None keeps a scalar, a dict keeps
# those keys, a list keeps each item.
AMOUNT = {"value": None, "currency": None}
KEPT_FIELDS = {
    "orderId": None, "legacyOrderId": None, "creationDate": None, "lastModifiedDate": None,
    "orderFulfillmentStatus": None, "orderPaymentStatus": None,
    "cancelStatus": {"cancelState": None, "cancelledDate": None},
    "pricingSummary": {**{name: AMOUNT for name in ("priceSubtotal", "priceDiscount", "deliveryCost",
                                                    "deliveryDiscount", "tax")},
                       "total": {**AMOUNT, "convertedFromValue": None, "convertedFromCurrency": None}},
    "paymentSummary": {"refunds": [{"amount": AMOUNT, "refundStatus": None}]},
    "lineItems": [{"lineItemId": None, "legacyItemId": None, "legacyVariationId": None, "sku": None, "title": None,
                   "quantity": None, "lineItemCost": AMOUNT, "discountedLineItemCost": AMOUNT}],
}


class RefreshTokenRefused(TokenRefused):
    """eBay refused the seller's refresh token: only the seller's fresh consent mends it."""


def iter_records(http: HttpClient, settings: EbaySettings, *, since: tuple[datetime, int] | None = None,
                 lookback: timedelta = timedelta(minutes=60), clock=time.monotonic, **_) -> Iterator[dict]:
    """Yield every order of the seller modified on or after `since` minus `lookback` (the last two
    years on a first load), cut down to KEPT_FIELDS. Raises MissingScope, before any call, when
    the account has no refresh token, and RefreshTokenRefused when eBay refuses it."""
    if settings.refresh_token is None:
        raise MissingScope(NAME, f"account {settings.account!r} has no refresh token, so it cannot read the "
                                 f"seller's orders: set {REFRESH_TOKEN_HOME} to the refresh token the seller "
                                 "granted this keyset")
    api = _FulfillmentApi(http, settings, clock)
    started = http.now()
    start = _window_start(since, lookback, started, http)
    url, deferred, offset = orders_url(settings.orders_url, start, 0), 0, 0
    while True:
        page = api.get(url)
        orders = page.get("orders") or []
        for order in orders:
            cursor = record_cursor(order)
            if cursor is not None and cursor[0] > started:
                deferred += 1  # changed while we crawl: the next run reads it
                continue
            yield project(order)
        offset += PAGE_LIMIT
        total = page.get("total") if isinstance(page.get("total"), int) else 0
        if not orders or not (page.get("next") or offset < total):
            break
        url = orders_url(settings.orders_url, start, offset)
    if deferred:
        http.stats.notes["orders_left_for_next_run"] = deferred


def orders_url(base: str, start: datetime, offset: int) -> str:
    """The getOrders URL: orders modified on or after `start`, PAGE_LIMIT from `offset`.

    Written out rather than left to requests, which would encode the filter's colons too: eBay's
    contract shows `filter=lastmodifieddate:%5B2016-05-15T08:25:43.511Z..%5D`, brackets encoded."""
    stamp = start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{start.microsecond // 1000:03d}Z"
    return f"{base}?filter={quote(f'lastmodifieddate:[{stamp}..]', safe=':.')}&limit={PAGE_LIMIT}&offset={offset}"


def _window_start(since, lookback: timedelta, now: datetime, http: HttpClient) -> datetime:
    """The mark less the lookback, within the two years getOrders serves and not in the future."""
    oldest = now - HISTORY
    if since is None:
        return oldest
    start = min(since[0] - lookback, now)
    if start < oldest:
        http.stats.notes["orders_since_clamped"] = oldest.isoformat()
        log.warning("ebay: orders are read from %s: getOrders serves only the last two years", oldest.date())
    return max(start, oldest)


def project(order) -> dict:
    """The order with only KEPT_FIELDS: no buyer, address, note or payment detail."""
    return _keep(order, KEPT_FIELDS) if isinstance(order, dict) else order


def _keep(value, spec):
    if spec is None:  # a scalar, or nothing: an object where a scalar belongs is not kept
        return value if isinstance(value, (str, int, float, bool)) or value is None else None
    if isinstance(spec, list):
        return [_keep(item, spec[0]) for item in value] if isinstance(value, list) else None
    if not isinstance(value, dict):
        return None
    return {key: _keep(value[key], sub) for key, sub in spec.items() if key in value}


class _FulfillmentApi:
    """getOrders with a user token minted from the seller's refresh token."""

    def __init__(self, http: HttpClient, settings: EbaySettings, clock):
        self.http, self.settings = http, settings
        self.auth = ClientCredentialsAuth(settings.base_url, self._mint, lambda token: f"Bearer {token}", clock)
        self.headers = {"Accept": "application/json"}

    def _mint(self) -> dict:
        # The refresh-token grant: the keyset in Basic auth, the refresh token and the one scope we
        # need in the form. The answer's user token lasts two hours and is kept in memory only.
        form = {"grant_type": "refresh_token", "refresh_token": self.settings.refresh_token.get_secret_value(),
                "scope": USER_SCOPE}
        keyset = (self.settings.client_id, self.settings.client_secret.get_secret_value())
        try:
            return request_token(self.http, self.settings.token_url, data=form, basic=keyset)
        except TokenRefused as exc:
            raise _refusal(exc, self.settings.account) from None

    def get(self, url: str) -> dict:
        try:
            # Never cached: the full answer holds the buyers' names and addresses.
            return request_with_refresh(self.http, self.auth, "GET", url, headers=self.headers,
                                        check=self._check, cache=False)
        except TokenRefused:
            raise
        except AuthError as exc:
            if exc.status == 403:  # errorId 1100: a token without the fulfillment scope
                raise AuthError(NAME, f"eBay denied the orders request: the user token lacks {USER_SCOPE}. The "
                                      "seller must consent again with that scope and the new refresh token go into "
                                      f"{REFRESH_TOKEN_HOME}", status=403, request_id=exc.request_id) from None
            raise
        except ResponseError as exc:
            if exc.status == 400:
                raise ResponseError(NAME, f"getOrders refused the request as malformed "
                                          f"({str(exc).split(': ', 1)[-1]}); errorIds 30700-31100 mean a bad "
                                          "filter, offset or limit: retrying will not help",
                                    status=400, request_id=exc.request_id) from None
            raise

    def _check(self, body, response) -> None:
        if response.status_code == 429:
            raise RetryableError(NAME, "too many requests (errorId 2001)", throttled=True, status=429)
        if not isinstance(body, dict):
            raise ResponseError(NAME, "the answer was not a JSON object")
        if not isinstance(body.get("orders", []), list):
            raise ResponseError(NAME, "the answer's orders were not a list")


def _refusal(exc: TokenRefused, account: str) -> TokenRefused:
    """The token endpoint's refusal as a sentence saying who must do what."""
    if exc.error_code == "invalid_grant":
        return RefreshTokenRefused(
            NAME, f"eBay refused the refresh token of account {account!r} (invalid_grant): it has expired (about 18 "
                  "months after the seller consented) or consent was withdrawn, so the seller must consent again "
                  f"and the new refresh token go into {REFRESH_TOKEN_HOME}", status=exc.status,
            request_id=exc.request_id, error_code=exc.error_code)
    if exc.error_code == "invalid_scope":
        return TokenRefused(NAME, f"the refresh token of account {account!r} was not granted {USER_SCOPE}: the seller "
                                  f"must consent again with that scope and the new refresh token go into "
                                  f"{REFRESH_TOKEN_HOME}", status=exc.status, request_id=exc.request_id,
                            error_code=exc.error_code)
    return TokenRefused(NAME, f"eBay's token endpoint refused the keyset of account {account!r}"
                              f"{f' ({exc.error_code})' if exc.error_code else ''}: check EBAY_CLIENT_ID and "
                              "EBAY_CLIENT_SECRET", status=exc.status, request_id=exc.request_id,
                        error_code=exc.error_code)
