"""Shopify's GraphQL Admin API for every stream: one paced client, and one crawl of a resource
(products, orders) by its (updatedAt, id) high-water mark, each record with all its children.

Pacing follows the query-cost bucket Shopify reports with every answer. The bucket belongs to the
shop, so the client keeps it on the HttpClient's pacer, which the run shares between the units of
one shop (its products and its orders draw on the same points).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from connectors import shopify_bulk
from connectors.cursors import shopify_cursor as record_cursor
from connectors.http import AuthError, HttpClient, ResponseError, RetryableError
from connectors.oauth import request_with_refresh
from connectors.settings import ShopifySettings
from connectors.shopify_auth import PRODUCT_SCOPES, make_auth
from connectors.shopify_children import (Companion, combined_query, extend, follow_up_fields,  # noqa: F401
                                         follow_up_query, next_children)

log = logging.getLogger("pipeline.shopify")

NAME = "shopify"
MAX_QUERY_COST = 1000  # Shopify refuses a single query that requests more (MAX_COST_EXCEEDED)
MAX_PAGE_SIZE = 250  # a connection page holds at most 250 nodes
FIRST_PAGE_SIZE = 10  # until Shopify has told us what a record costs
CHILDREN_INLINE = 10  # first page of children (variants, line items) inline; the rest by follow-ups
# A record whose children continue is held until a later page query asks, beside its own records,
# for the next FOLLOW_UP_CHILDREN of them (an aliased field a held record, as many as the cost cap
# allows; the page gets what is left): some children more cost points, not a request a record.
# Records leave in order once complete; what is still left after one follow-up (a product with
# hundreds of variants) comes one query a record.
FOLLOW_UP_CHILDREN = 20
RESTART_AFTER_PAGES = 20  # re-issue the filtered query so no paging cap or stale cursor ends a crawl


@dataclass(frozen=True)
class Resource:
    """What a crawl of one root connection needs to know about it."""

    root: str  # "products": the connection in the page query
    query: str  # the page query: $first, $after, $query and the children's page size
    child: str  # "variants": the child connection, merged into the record as a list
    child_first_variable: str  # the page query's variable for the children's page size
    child_query: str  # the follow-up query for more children: $id, $after, $childFirst
    child_first: int  # the most children one follow-up asks for (the cost cap allows)
    child_root: str  # "product": the follow-up query's root field
    bulk_query: str
    count_query: str
    count_root: str
    hint_key: str  # where the learned page size is kept between runs
    scope: str  # the scope named when Shopify answers ACCESS_DENIED


class AccessDenied(AuthError):
    """Shopify answered ACCESS_DENIED: the app's token lacks the scope the query needs."""


class QueryTooCostly(ResponseError):
    def __init__(self, cost: float, max_cost: float):
        super().__init__(NAME, f"query cost {cost:g} exceeds the single-query limit {max_cost:g}")
        self.cost, self.max_cost = cost, max_cost


def crawl(api: "ShopifyGraphQL", resource: Resource, *, since, lookback: timedelta, restart_after_pages: int,
          full_refresh: bool, checkpoint, known, hints, bulk_min: int, companion: Companion | None = None
          ) -> Iterator[dict]:
    """Every record changed after `since` minus `lookback`, each with all its children (see
    connectors/shopify.py's iter_records for what `known`, `hints`, `companion` and bulk operations do)."""
    api.page_size = _stored_page_size(hints, resource)
    checkpoint = checkpoint or shopify_bulk.Checkpoint()
    if since is None and (full_refresh or checkpoint.get() or _large(api, resource, bulk_min)):
        try:
            yield from shopify_bulk.run(api, resource.bulk_query, checkpoint, child=resource.child)
            return
        except shopify_bulk.BulkUnavailable as exc:
            log.warning("shopify: %s; paging instead", str(exc).split(": ", 1)[-1])
    query_filter = updated_filter(since[0] - lookback, ">") if since else None
    api.companion = companion  # asked for beside the first page
    last_key, after, pages, held = None, None, 0, []
    while True:
        # The page query also asks for more children of earlier records still held (`held`),
        # which are yielded, complete and in order, as soon as they are ready.
        connection = api.page(resource, query_filter, after, held)
        pages += 1
        for node in connection.get("nodes") or []:
            key = record_cursor(node)
            if key is not None and last_key is not None and key <= last_key:
                continue  # already yielded before a restart
            last_key = key or last_key
            if (since and key is not None and key <= since and next_children(node, resource.child)
                    and (node["id"], key[0]) in known):
                log.debug("shopify: %s unchanged since it was written; its %s are not fetched again",
                          node["id"], resource.child)
                continue
            held.append(node)
        # What is complete leaves before the next page is asked for (a limited run asks no more)
        yield from api.ready(held, resource)
        page_info = connection.get("pageInfo") or {}
        if not (page_info.get("hasNextPage") and page_info.get("endCursor")):
            break
        if pages >= restart_after_pages and last_key is not None:
            # Re-issue the filtered query so no paging cap or stale cursor ends a crawl.
            query_filter, after, pages = updated_filter(last_key[0], ">="), None, 0
        else:
            after = page_info["endCursor"]
    while held:
        api.page(resource, None, None, held, records=False)
        yield from api.ready(held, resource)
    if hints is not None and api.cost_per_record and api.page_size != _stored_page_size(hints, resource):
        hints.set(resource.hint_key, api.page_size)


def _stored_page_size(hints, resource: Resource) -> int:
    value = hints.get(resource.hint_key) if hints is not None else None
    return value if isinstance(value, int) and 1 <= value <= MAX_PAGE_SIZE else FIRST_PAGE_SIZE


def _large(api: "ShopifyGraphQL", resource: Resource, bulk_min: int) -> bool:
    if not bulk_min:
        return False
    body = api.query(resource.count_query, {})
    count = ((body.get("data") or {}).get(resource.count_root) or {}).get("count") or 0
    return count >= bulk_min


def updated_filter(when: datetime, op: str) -> str:
    # Shopify's search syntax needs the timestamp quoted.
    return f"updated_at:{op}'{when.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}'"


class CostBucket:
    """Shopify's leaky bucket as it last reported itself, projected forward at the restore rate."""

    def __init__(self):
        self.maximum = self.available = self.restore_rate = None
        self.observed_at = 0.0

    def update(self, cost: dict | None, now: float) -> None:
        status = (cost or {}).get("throttleStatus") or {}
        try:
            self.maximum = float(status["maximumAvailable"])
            self.available = float(status["currentlyAvailable"])
            self.restore_rate = float(status["restoreRate"])
            self.observed_at = now
        except (KeyError, TypeError, ValueError):
            pass

    def seconds_until(self, cost: float, now: float) -> float:
        if self.available is None or not self.restore_rate:
            return 0.0
        have = min(self.maximum, self.available + (now - self.observed_at) * self.restore_rate)
        return max(0.0, (cost - have) / self.restore_rate)


_AUTHS: "weakref.WeakKeyDictionary[HttpClient, dict]" = weakref.WeakKeyDictionary()


class ShopifyGraphQL:
    """One shop's GraphQL endpoint: paced by its cost bucket, pages learned from reported costs."""

    def __init__(self, http: HttpClient, shop: ShopifySettings, clock, scopes=PRODUCT_SCOPES):
        self.http, self.clock = http, clock
        self.url = shop.graphql_url
        # Static, or minted (scope checked) first; one per client and scopes, so a unit's queries
        # (the products' crawl, then the destroyed products) share one token.
        self.auth = _AUTHS.setdefault(http, {}).get(scopes) or _AUTHS[http].setdefault(
            scopes, make_auth(http, shop, clock, scopes=scopes))
        self.bucket = http.pacer.shared.setdefault("shopify_cost_bucket", CostBucket())  # the shop's
        self.page_size = FIRST_PAGE_SIZE
        self.cost_per_record: float | None = None
        self.child_query_cost: float | None = None
        self.follow_up_cost: float | None = None  # one follow-up field's cost, as a refusal showed it
        self.followed: set[str] = set()  # the held records whose children have been asked for beside a page
        self.companion: Companion | None = None
        self.access_denied_scope = scopes[0]

    def page(self, resource: Resource, query_filter, after, held: list, *, records: bool = True) -> dict:
        """One page of records (the root connection), asking in the same query for the next
        children of as many `held` records as the cost cap allows, which are extended in place;
        with `records` False, only those children (the crawl's end). Returns the root connection."""
        candidates = [node for node in held if next_children(node, resource.child) and node["id"] not in self.followed]
        while True:
            beside = self.companion if records else None
            first, wanting = self._sizes(candidates, records, beside.cost if beside else 0)
            if candidates and not wanting:  # none fits beside a page: one query a record
                self.followed.update(node["id"] for node in candidates)
            if not (records or wanting):
                return {}
            variables = {"childFirst": min(FOLLOW_UP_CHILDREN, resource.child_first)} if wanting else {}
            for i, node in enumerate(wanting):
                variables[f"id{i}"], variables[f"after{i}"] = node["id"], next_children(node, resource.child)
            declared, fields = follow_up_fields(resource.child_query, len(wanting))
            if records:
                variables.update({"first": first, "after": after, "query": query_filter,
                                  resource.child_first_variable: CHILDREN_INLINE})
            if beside:
                variables.update(beside.variables)
                declared, fields = ", ".join(filter(None, (declared, beside.declared))), "\n  ".join(
                    filter(None, (fields, beside.field)))
            query = combined_query(resource.query if records else None, declared, fields)
            estimate = ((first * self.cost_per_record if self.cost_per_record else 0) + (beside.cost if beside else 0)
                        + (len(wanting) * self._follow_up_cost() if wanting else 0)) or None
            try:
                body = self._query(query, variables, estimate)
            except QueryTooCostly as exc:
                if first <= 1 and not wanting and beside:
                    self.companion = None  # asked for on its own later
                    continue
                if first <= 1 and not wanting:
                    raise
                if wanting:  # the follow-ups cost more than guessed: fewer beside a page, or none
                    theirs = exc.cost - first * (self.cost_per_record or 0) - (beside.cost if beside else 0)
                    self.follow_up_cost = max(2 * self._follow_up_cost(), theirs / len(wanting))
                else:  # the page's records alone
                    self.page_size = max(1, math.floor(first * exc.max_cost / exc.cost))
                continue
            if beside:
                beside.answer, self.companion = body["data"].get(beside.alias), None
            self._learn_costs(body, first, len(wanting), beside.cost if beside else 0)
            self.followed.update(node["id"] for node in wanting)
            for i, node in enumerate(wanting):
                extend(node, resource.child, body["data"], f"more{i}")
            return _dig(body, "data", resource.root) if records else {}

    def _sizes(self, wanting: list, records: bool, beside: float = 0) -> tuple[int, list]:
        """The next query's page size (0 for none) and the follow-ups that fit beside one record
        (and `beside` points of another read)."""
        if records and not self.cost_per_record:  # a crawl's first query: what a record costs is learned from it
            return max(1, math.floor(self.page_size * (1 - beside / self._limit()))), []
        limit, record = self._limit() - beside, self.cost_per_record if records else 0
        each = self._follow_up_cost()
        wanting = wanting[:max(0, math.floor((limit - record) / each))]
        if not records:
            return 0, wanting
        return max(1, min(self.page_size, math.floor((limit - len(wanting) * each) / record))), wanting

    def _follow_up_cost(self) -> float:
        """What one record's follow-up field may cost: a record's cost times FOLLOW_UP_CHILDREN /
        CHILDREN_INLINE (twice its children, so at least the follow-up's: the record's own fields
        are counted in), raised when Shopify refused a query as too costly; a tenth of the cap
        while no cost is known."""
        guess = self.cost_per_record * FOLLOW_UP_CHILDREN / CHILDREN_INLINE if self.cost_per_record else MAX_QUERY_COST / 10
        return max(self.follow_up_cost or 0, guess)

    def _limit(self) -> float:
        return MAX_QUERY_COST if self.bucket.maximum is None else min(MAX_QUERY_COST, self.bucket.maximum)

    def _learn_costs(self, body: dict, first: int, follow_ups: int, beside: float = 0) -> None:
        # The requested cost scales with `first`; dividing it all by `first` over-counts the fixed
        # part, so the page size derived here is safely below the cap. Learned from a query without
        # follow-ups (a crawl's first, and any other).
        requested = _requested_cost(body)
        if not requested or requested <= beside:
            return
        requested -= beside
        if first and not follow_ups:  # a follow-up's cost is never learned from a mixed query: the
            # record's over-counted fixed part, times the page, would eat it
            self.cost_per_record = requested / first
            self.page_size = max(1, min(MAX_PAGE_SIZE, math.floor(self._limit() / self.cost_per_record)))

    def ready(self, held: list, resource: Resource) -> Iterator:
        """Take from `held` its leading records that are ready (their children end, or have been
        asked for once beside a page) and yield each with all its children (the rest of them one
        query a record)."""
        count = 0
        for node in held:
            if next_children(node, resource.child) and node["id"] not in self.followed:
                break
            count += 1
        done, held[:] = held[:count], held[count:]
        for node in done:
            self.followed.discard(node.get("id") if isinstance(node, dict) else None)
            yield self.with_all_children(node, resource)

    def with_all_children(self, node, resource: Resource):
        """The record with its child connection replaced by the full list of its children."""
        child = resource.child
        if not isinstance(node, dict) or not isinstance(node.get(child), dict):
            return node  # malformed: the normalizer quarantines it with a reason
        connection = node[child]
        children = list(connection.get("nodes") or [])
        after = next_children(node, child)
        while after:
            body = self._query(resource.child_query, {"id": node.get("id"), "after": after,
                                                      "childFirst": resource.child_first}, self.child_query_cost)
            self.child_query_cost = _requested_cost(body) or self.child_query_cost
            parent = _dig(body, "data", resource.child_root, optional=True)
            if parent is None:  # deleted while we were paging: keep what we have
                break
            more = _dig(parent, child)
            children.extend(more.get("nodes") or [])
            page_info = more.get("pageInfo") or {}
            after = page_info.get("endCursor") if page_info.get("hasNextPage") else None
        del node[child]  # the parsed answer is ours alone: reshaped in place, not copied
        node[child] = children
        return node

    def read(self, query: str, variables: dict, estimate: float) -> dict:
        """One paced read query of about `estimate` points (a development run may replay it from the cache)."""
        return self._query(query, variables, estimate)

    def query(self, query: str, variables: dict) -> dict:
        """One paced GraphQL call that is never cached (bulk operations change from call to call)."""
        return self._query(query, variables, None, cache=False)

    def _query(self, query: str, variables: dict, estimate: float | None, cache: bool = True) -> dict:
        # A query whose cost Shopify has not reported yet may cost up to the cap: wait for that.
        if estimate is None and self.bucket.maximum is not None:
            estimate = min(MAX_QUERY_COST, self.bucket.maximum)
        if estimate:
            # Points are whole, and the bucket refills continuously: wait for one point more than
            # the whole estimate, so rounding (9 x 107.33 points; a refill time of 12.08 s) can
            # never leave the query a fraction short and THROTTLED. One point is 10 ms at 100/s.
            needed = math.ceil(estimate - 1e-9) + 1
            if self.bucket.maximum is not None:
                needed = min(needed, self.bucket.maximum)  # a full bucket is all there ever is
            self.http.wait(self.bucket.seconds_until(needed, self.clock()), throttled=True)
        body = request_with_refresh(self.http, self.auth, "POST", self.url, check=self._check, cache=cache,
                                    json_body={"query": query, "variables": variables})
        self.bucket.update(_dig(body, "extensions", "cost", optional=True), self.clock())
        return body

    def _check(self, body, response) -> None:
        """Sort a GraphQL answer: Shopify reports throttling and cost errors inside HTTP 200."""
        if not isinstance(body, dict):
            raise ResponseError(NAME, "the answer was not a JSON object")
        errors = body.get("errors")
        if not errors:
            if not isinstance(body.get("data"), dict):
                raise ResponseError(NAME, "the answer had neither data nor errors")
            return
        if not isinstance(errors, list):
            raise ResponseError(NAME, f"GraphQL error: {str(errors)[:200]}")
        first = errors[0] if isinstance(errors[0], dict) else {}
        extensions = first.get("extensions") or {}
        code = extensions.get("code")
        cost = _dig(body, "extensions", "cost", optional=True) or {}
        if code == "THROTTLED":
            self.bucket.update(cost, self.clock())
            requested = cost.get("requestedQueryCost") or self.bucket.maximum or MAX_QUERY_COST
            wait = self.bucket.seconds_until(float(requested), self.clock())
            raise RetryableError(NAME, "throttled: the query-cost bucket is empty",
                                 retry_after=wait or None, throttled=True)
        if code == "MAX_COST_EXCEEDED":
            raise QueryTooCostly(float(extensions.get("cost") or MAX_QUERY_COST + 1),
                                 float(extensions.get("maxCost") or MAX_QUERY_COST))
        if code == "ACCESS_DENIED":
            raise AccessDenied(NAME, f"access denied: the app lacks the {self.access_denied_scope} scope")
        raise ResponseError(NAME, f"GraphQL error: {str(first.get('message', ''))[:200]}"
                            + (f" [{code}]" if code else ""))


def _requested_cost(body: dict) -> float | None:
    cost = _dig(body, "extensions", "cost", optional=True) or {}
    value = cost.get("requestedQueryCost")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _dig(value, *keys, optional: bool = False):
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            if optional:
                return None
            raise ResponseError(NAME, f"unexpected answer: no {'.'.join(keys)}")
        value = value[key]
    return value


