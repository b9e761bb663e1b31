"""A local Shopify GraphQL Admin API for `products`: schema validation, the 1,000-point cap,
cost-based throttling, a deterministic catalog that can change on request, and fault injection.

It speaks the wire format only; the pipeline reaches it through the same settings a real shop
uses (SHOPIFY_API_BASE_URL, SHOPIFY_SHOP_DOMAIN, and SHOPIFY_CLIENT_ID with SHOPIFY_CLIENT_SECRET
for the client-credentials token endpoint of `sandbox/shopify_oauth.py`, or a static
SHOPIFY_ACCESS_TOKEN).
"""

from __future__ import annotations

import base64
import bisect
import gzip
import json
import math
import random
import re
import secrets
import tempfile
import threading
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from graphql import GraphQLError, OperationDefinitionNode, build_client_schema, execute, parse, validate

from sandbox.catalog import CatalogSpec, LazyCatalog, catalog, mutate, rich_updated_at
from sandbox.graphql_cost import actual_cost, requested_cost
from sandbox.graphql_exec import Unsupported, execute_query
from sandbox.server import SandboxServer
from sandbox.shopify_orders import OrderBook
from sandbox.shopify_oauth import TOKEN_PATH, TokenIssuer

SCHEMA_FILE = Path(__file__).parent / "data" / "shopify_admin_schema_2025-01.json.gz"
PATH_RE = re.compile(r"^/admin/api/(\d{4}-\d{2}|unstable)/graphql\.json$")
FILTER_RE = re.compile(r"updated_at:(>=|<=|>|<)'?([0-9T:\-.Z+]+)'?")
MAX_COST = 1000
MAX_PAGE = 250
READ_ROOT_FIELDS = frozenset({"products", "product", "events"})  # pure reads: safe to retry in graphql-core


@lru_cache(maxsize=1)
def admin_schema():
    """Shopify's Admin GraphQL schema (2025-01) from the repository's copy."""
    with gzip.open(SCHEMA_FILE, "rt", encoding="utf-8") as handle:
        return build_client_schema(json.load(handle)["data"], assume_valid=True)


class Bucket:
    """Shopify's leaky bucket: charged the requested cost, refunded down to the actual cost."""

    def __init__(self, maximum: float, restore_rate: float, clock):
        self.maximum, self.restore_rate, self.clock = maximum, restore_rate, clock
        self.available, self.at = maximum, clock()

    def level(self) -> float:
        now = self.clock()
        self.available = min(self.maximum, self.available + (now - self.at) * self.restore_rate)
        self.at = now
        return self.available

    def status(self) -> dict:
        return {"maximumAvailable": float(self.maximum), "currentlyAvailable": int(self.level()),
                "restoreRate": float(self.restore_rate)}


class StorageServer(SandboxServer):
    """The storage host bulk results download from: signed URLs, no Shopify credentials wanted."""

    def __init__(self):
        super().__init__()
        self.files: dict[str, bytes | Path] = {}  # a large result lives on disk
        self.spool = tempfile.TemporaryDirectory(prefix="sandbox-bulk-")

    def stop(self) -> None:
        super().stop()
        self.spool.cleanup()

    def handle_api(self, method, path, headers, raw, query=None):
        name = path.rsplit("/", 1)[-1].removesuffix(".jsonl")
        if method != "GET" or name not in self.files or not (query or {}).get("X-Goog-Signature"):
            return 403, {"error": "AccessDenied"}, {}
        return 200, self.files[name], {"raw": True}


class ShopifySandbox(SandboxServer):
    """`token` is a legacy custom app's static token (None: none is accepted); `client_id` and
    `client_secret` a Dev Dashboard app's, whose minted tokens live `token_lifetime_s` seconds."""

    def __init__(self, spec: CatalogSpec = CatalogSpec(), *, token: str | None = "shpat_sandbox_token",
                 client_id: str | None = None, client_secret: str | None = None, token_lifetime_s: int = 5,
                 bucket_max: float = 2000, restore_rate: float = 100, throttle: bool = True,
                 clock=time.monotonic, port: int = 0, orders: int | None = None,
                 scopes: str = "read_products,read_orders,read_all_orders"):
        super().__init__(port=port)
        self.token, self.throttle = token, throttle
        self.scopes = scopes  # what the static token may do (minted tokens: self.oauth.scope)
        self._scopes_now: set[str] = set()
        self.oauth = TokenIssuer(client_id, client_secret, lifetime_s=token_lifetime_s, clock=clock)
        self.bucket = Bucket(bucket_max, restore_rate, clock)
        self.spec = spec
        self.products = catalog(spec)  # a dict; for a rich spec, built on demand
        sold = [p for _, p in zip(range(500), self.products.values())]  # orders draw on a few hundred products
        self.order_book = OrderBook(sold, min(spec.size // 2, 500) if orders is None else orders, spec.seed)
        self.generation = 0
        self.events: list[dict] = []  # the shop's events, oldest first: products destroyed
        self.throttled_count = 0
        self.charged_cost = 0
        self._sorted = None
        self._lock = threading.Lock()
        self.bulk_operations: dict[str, dict] = {}
        self.bulk_polls_to_finish = 3  # polls before an operation completes
        self.bulk_outcome = "COMPLETED"  # or FAILED, EXPIRED, CANCELED
        self.bulk_shuffle = True  # False: each product's line followed by its variants' (Shopify's usual order)
        self.bulk_in_background = False  # True: the result is written by a thread while polls answer RUNNING
        self.bulk_denied = False
        self.storage = StorageServer()  # the signed-URL download host, a different host:port
        admin_schema()

    def start(self):
        self.storage.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        self.storage.stop()

    # -- control -----------------------------------------------------------------------------
    def mutate(self, fraction: float, now: datetime | None = None) -> list[str]:
        """Change title, prices and updatedAt of `fraction` of the products; returns their ids."""
        now = now or datetime.now(timezone.utc)
        with self._lock:
            ids = self._pick(fraction, at_least=0)
            for pid in ids:
                self.products[pid] = mutate(self.products[pid], now, self.generation)
            self._sorted = None
        return ids

    def sell_out(self, fraction: float, now: datetime | None = None) -> list[str]:
        """Every variant of `fraction` of the products (at least one) sold out, updatedAt now; returns their ids."""
        now = now or datetime.now(timezone.utc)
        with self._lock:
            ids = self._pick(fraction)
            for pid in ids:
                product = self.products[pid]
                self.products[pid] = {**product, "updatedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "totalInventory": 0,
                                      "variants": [{**v, "inventoryQuantity": 0, "availableForSale": False}
                                                   for v in product["variants"]]}
            self._sorted = None
        return ids

    def delete(self, fraction: float, now: datetime | None = None) -> list[str]:
        """Destroy `fraction` of the products (at least one), each leaving a `destroy` event as Shopify
        does; returns their ids."""
        now = now or datetime.now(timezone.utc)
        with self._lock:
            ids = self._pick(fraction)
            for pid in ids:
                self.destroy(pid, now)
        return ids

    def _pick(self, fraction: float, at_least: int = 1) -> list[str]:
        """A new generation's `fraction` of the products (at least `at_least`), chosen from the
        seed: the same ids on every machine. Called under the lock."""
        self.generation += 1
        rng = random.Random(self.spec.seed * 1000 + self.generation)
        count = max(at_least, math.ceil(fraction * len(self.products)))
        return sorted(rng.sample(sorted(self.products), count))

    def destroy(self, pid: str, now: datetime) -> None:
        """One product destroyed at `now` (call under the lock, or before the server is shared)."""
        if isinstance(self.products, LazyCatalog):
            raise NotImplementedError("the sandbox destroys products of an eager catalog only")
        del self.products[pid]
        self._sorted = None
        self.events.append({
            "__typename": "BasicEvent", "id": f"gid://shopify/BasicEvent/{len(self.events) + 1}",
            "createdAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "action": "destroy", "subjectId": pid,
            "subjectType": "PRODUCT", "message": f"Product {pid.rsplit('/', 1)[-1]} was deleted.",
            "appTitle": None, "attributeToApp": False, "attributeToUser": True, "criticalAlert": False,
            "hasAdditionalContent": False, "additionalContent": None, "additionalData": None,
            "arguments": [pid], "secondaryMessage": None, "subject": None})

    def refund_orders(self, fraction: float, now: datetime | None = None) -> list[str]:
        """Refund a line of `fraction` of the orders, bumping their updatedAt; returns their ids."""
        with self._lock:
            self.generation += 1
            return self.order_book.refund(fraction, now or datetime.now(timezone.utc), self.spec.seed + self.generation)

    def handle_control(self, path: str, body: dict):
        if path == "/_sandbox/mutate":
            return 200, {"changed": self.mutate(float(body.get("fraction", 0.03)))}
        return super().handle_control(path, body)

    # -- the API -----------------------------------------------------------------------------
    def handle_api(self, method: str, path: str, headers, raw_body: bytes, query=None):
        if method == "POST" and path == TOKEN_PATH:
            return self.oauth.answer(headers, raw_body)
        if method != "POST" or not PATH_RE.match(path):
            return 404, {"errors": "Not Found"}, {}
        supplied = headers.get("X-Shopify-Access-Token")
        if not ((self.token and supplied == self.token) or self.oauth.valid(supplied)):
            return 401, {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}, {}
        granted = self.scopes if (self.token and supplied == self.token) else self.oauth.scope
        scopes = {s.strip() for s in granted.split(",") if s.strip()}
        try:
            request = json.loads(raw_body)
            prepared = _prepare(request["query"])
        except (ValueError, KeyError, TypeError, GraphQLError) as exc:
            return 200, {"errors": [{"message": f"Parse error: {exc}"}]}, {}
        variables = request.get("variables") or {}
        if prepared.errors:
            return 200, {"errors": list(prepared.errors)}, {}
        try:
            cost = requested_cost(admin_schema(), prepared.operation, prepared.fragments, variables)
        except (GraphQLError, KeyError, TypeError) as exc:
            return 200, {"errors": [{"message": str(exc)}]}, {}
        if cost > MAX_COST:
            return 200, {"errors": [{
                "message": f"Query cost is {cost}, which exceeds the single query max cost limit ({MAX_COST}).",
                "extensions": {"code": "MAX_COST_EXCEEDED", "cost": cost, "maxCost": MAX_COST}}]}, {}
        with self._lock:
            if self.throttle and self.bucket.level() < cost:
                self.throttled_count += 1
                return 200, {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                             "extensions": {"cost": {"requestedQueryCost": cost, "actualQueryCost": None,
                                                     "throttleStatus": self.bucket.status()}}}, {"kind": "throttled"}
            if self.throttle:
                self.bucket.available -= cost
            self._scopes_now = scopes
            data, errors = self._execute(prepared, variables)
            actual = min(cost, actual_cost(data)) if data else 0
            if self.throttle:
                self.bucket.available += cost - actual
            self.charged_cost += actual
            body = {"data": data}
            if errors:
                body["errors"] = errors
            body["extensions"] = {"cost": {"requestedQueryCost": cost, "actualQueryCost": actual,
                                           "throttleStatus": self.bucket.status()}}
        return 200, body, {"kind": "query", "cost": cost}

    def _execute(self, prepared: "_Prepared", variables: dict) -> tuple[dict | None, list | None]:
        """Reads of products take the small executor; the rest (and any error) graphql-core's."""
        try:
            return execute_query(admin_schema(), prepared.operation, prepared.fragments, self._root(), variables,
                                 READ_ROOT_FIELDS), None
        except (Unsupported, GraphQLError):
            pass
        result = execute(admin_schema(), prepared.document, root_value=self._root(), variable_values=variables)
        return result.data, [e.formatted for e in result.errors] if result.errors else None

    def _root(self) -> dict:
        book, now = self.order_book, datetime.now(timezone.utc)
        return {"products": self._products_connection, "product": self._product, "node": self._node_by_id,
                "productsCount": lambda info, **_: {"count": len(self.products), "precision": "EXACT"},
                "bulkOperationRunQuery": self._bulk_start, "events": self._events_connection,
                "orders": lambda info, **args: book.connection(book.visible(self._scopes_now, now), **args),
                "order": lambda info, id: next((book.node(o) for _, o in book.visible(self._scopes_now, now)
                                                if o["id"] == id), None),
                "ordersCount": lambda info, **_: {"count": len(book.visible(self._scopes_now, now)),
                                                  "precision": "EXACT"},
                "currentAppInstallation": lambda info: {"accessScopes": [
                    {"handle": h, "description": h} for h in sorted(self._scopes_now)]}}

    # -- bulk operations ---------------------------------------------------------------------
    def _bulk_start(self, info, query):
        if self.bulk_denied:
            return {"bulkOperation": None, "userErrors": [{"field": ["query"], "message": "Bulk operations are not permitted for this app"}]}
        errors = validate(admin_schema(), parse(query)) if query else ["empty"]
        if errors:
            return {"bulkOperation": None, "userErrors": [{"field": ["query"], "message": "Invalid bulk query"}]}
        if any(op["status"] in ("CREATED", "RUNNING") for op in self.bulk_operations.values()):
            return {"bulkOperation": None, "userErrors": [{"field": None, "message":
                    "A bulk query operation for this app and shop is already in progress"}]}
        op_id = f"gid://shopify/BulkOperation/{len(self.bulk_operations) + 1}"
        self.bulk_operations[op_id] = {"__typename": "BulkOperation", "id": op_id, "status": "CREATED", "polls": 0,
                                       "errorCode": None, "objectCount": "0", "rootObjectCount": "0", "url": None,
                                       "partialDataUrl": None, "createdAt": "2026-11-27T00:00:00Z", "query": query,
                                       "type": "QUERY", "completedAt": None, "fileSize": None}
        return {"bulkOperation": self.bulk_operations[op_id], "userErrors": []}

    def _node_by_id(self, info, id):
        op = self.bulk_operations.get(id)
        if op is not None:
            op["polls"] += 1
            if op["status"] in ("CREATED", "RUNNING"):
                op["status"] = "RUNNING"
                if op["polls"] >= self.bulk_polls_to_finish and self.bulk_in_background:
                    if "writer" not in op:  # a million products take a while: never longer than a poll
                        op["writer"] = threading.Thread(target=self._bulk_finish, args=(op,), daemon=True)
                        op["writer"].start()
                elif op["polls"] >= self.bulk_polls_to_finish:
                    self._bulk_finish(op)
            return {k: v for k, v in op.items() if k != "writer"}
        product = self.products.get(id)
        return {**self._node(product), "__typename": "Product"} if product else None

    def _bulk_finish(self, op: dict) -> None:
        if self.bulk_outcome in ("FAILED", "EXPIRED", "CANCELED"):
            op.update(status=self.bulk_outcome, errorCode="INTERNAL_SERVER_ERROR" if self.bulk_outcome == "FAILED" else None)
            return
        orders = op["query"].lstrip("{ ").startswith("orders")
        source = (self.order_book.bulk_lines(op["query"]) if orders
                  else _bulk_lines(self.products.values(), op["query"]))
        name = op["id"].rsplit("/", 1)[-1]
        if self.bulk_shuffle:  # Shopify does not promise a child line follows its parent
            lines = list(source)
            random.Random(len(lines)).shuffle(lines)
            self.storage.files[name] = ("\n".join(lines) + "\n").encode()
            count, size = len(lines), len(self.storage.files[name])
        else:  # streamed to disk: a million products' result never sits in memory
            path = Path(self.storage.spool.name) / f"{name}.jsonl"
            count = 0
            with path.open("w", encoding="utf-8") as out:
                for line in source:
                    out.write(line + "\n")
                    count += 1
            self.storage.files[name], size = path, path.stat().st_size
        op.update(status="COMPLETED", objectCount=str(count), rootObjectCount=str(len(self.products)),
                  fileSize=str(size), completedAt="2026-11-27T00:05:00Z",
                  url=f"{self.storage.base_url}/bulk/{name}.jsonl?X-Goog-Signature=sandbox{secrets.token_hex(16)}")

    def _ordered(self) -> tuple[list[tuple], list[dict]]:
        if self._sorted is None and isinstance(self.products, LazyCatalog) and not self.products.overrides:
            self._sorted = (_IndexKeys(self.products.spec), _IndexItems(self.products))  # index order is key order
        if self._sorted is None:
            items = sorted(self.products.values(), key=_key)
            self._sorted = ([_key(p) for p in items], items)
        return self._sorted

    def _products_connection(self, info, first=None, after=None, query=None, sortKey="ID", **_):
        keys, items = self._ordered()
        if sortKey not in ("UPDATED_AT", "ID"):
            raise GraphQLError("the sandbox sorts by UPDATED_AT or ID only")
        if sortKey == "ID":
            items = sorted(items, key=lambda p: _numeric_id(p["id"]))
            keys = [(0, _numeric_id(p["id"])) for p in items]
        start = _lower_bound(keys, query) if sortKey == "UPDATED_AT" else 0
        if after:
            start = max(start, bisect.bisect_right(keys, _decode_cursor(after)))
        first = _page_size(first)
        matched = []
        for index in range(start, len(items)):
            if _matches(items[index], query):
                matched.append((keys[index], items[index]))
                if len(matched) > first:
                    break
        page, has_next = matched[:first], len(matched) > first
        nodes = [self._node(p) for _, p in page]
        return {
            "nodes": nodes,
            "edges": [{"cursor": _encode_cursor(k), "node": n} for (k, _), n in zip(page, nodes)],
            "pageInfo": {"hasNextPage": has_next, "hasPreviousPage": start > 0,
                         "startCursor": _encode_cursor(page[0][0]) if page else None,
                         "endCursor": _encode_cursor(page[-1][0]) if page else None},
        }

    def _events_connection(self, info, first=None, after=None, query=None, sortKey="ID", **_):
        """The shop's events matching `query`'s action, subject_type and created_at terms, oldest first."""
        size = _page_size(first)
        matched = [e for e in self.events if _event_matches(e, query)]
        start = int(base64.b64decode(after).decode()) if after else 0
        page = matched[start:start + size]
        end = start + len(page)
        return {"nodes": page, "edges": [{"cursor": _b64(str(start + i + 1)), "node": e} for i, e in enumerate(page)],
                "pageInfo": {"hasNextPage": end < len(matched), "hasPreviousPage": start > 0,
                             "startCursor": _b64(str(start)), "endCursor": _b64(str(end))}}

    def _product(self, info, id):
        product = self.products.get(id)
        return self._node(product) if product else None

    def _node(self, product: dict) -> dict:
        variants = product["variants"]

        def variants_connection(info, first=None, after=None, **_):
            size = _page_size(first)
            start = int(base64.b64decode(after).decode()) if after else 0
            page = variants[start:start + size]
            end = start + len(page)
            return {"nodes": page, "edges": [{"cursor": _b64(str(start + i + 1)), "node": v} for i, v in enumerate(page)],
                    "pageInfo": {"hasNextPage": end < len(variants), "hasPreviousPage": start > 0,
                                 "startCursor": _b64(str(start)), "endCursor": _b64(str(end))}}

        return {**product, "variants": variants_connection}


def _bulk_lines(products, query: str):
    """JSONL lines of a bulk result as Shopify writes them (compact UTF-8): a product, then each
    variant with its __parentId last; only the fields the query names (a rich catalog has more)."""
    named = set(re.findall(r"[A-Za-z_]\w*", query))

    def fields(value):  # nested objects too: the media's __typename is the sandbox's own, not asked for
        if isinstance(value, dict):
            return {k: fields(v) for k, v in value.items() if k in named}
        return value

    for product in products:
        yield _jsonl(fields({k: v for k, v in product.items() if k != "variants"}))
        yield from (_jsonl({**fields(variant), "__parentId": product["id"]}) for variant in product["variants"])


def _jsonl(value) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate a test planted: escaped, as UTF-8 cannot carry it
        text = json.dumps(value, separators=(",", ":"))
    return text


class _IndexKeys:
    """The (updatedAt, numeric id) sort keys of an unchanged rich catalog, computed per index."""

    def __init__(self, spec: CatalogSpec):
        self.spec = spec

    def __len__(self) -> int:
        return self.spec.size

    def __getitem__(self, index: int) -> tuple:
        if not 0 <= index < self.spec.size:
            raise IndexError(index)
        return (rich_updated_at(self.spec, index + 1).strftime("%Y-%m-%dT%H:%M:%SZ"), 8_000_001 + index)


class _IndexItems:
    def __init__(self, products: LazyCatalog):
        self.products = products

    def __len__(self) -> int:
        return self.products.spec.size

    def __getitem__(self, index: int) -> dict:
        return self.products.product(index + 1)


class _Prepared(NamedTuple):
    document: object
    operation: OperationDefinitionNode | None
    fragments: dict
    errors: tuple


@lru_cache(maxsize=64)
def _prepare(query: str) -> _Prepared:
    """Parse and validate a query once: clients send the same few query texts again and again."""
    document = parse(query)
    errors = tuple(e.formatted for e in validate(admin_schema(), document))
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in document.definitions if d.kind == "fragment_definition"}
    return _Prepared(document, operations[0] if operations else None, fragments, errors)


def _page_size(first) -> int:
    if first is None:
        raise GraphQLError("you must provide one of first or last")
    if not 0 <= first <= MAX_PAGE:
        raise GraphQLError(f"first must be between 0 and {MAX_PAGE}")
    return first


def _numeric_id(gid: str) -> int:
    return int(gid.rsplit("/", 1)[-1])


def _key(product: dict) -> tuple:
    return (product["updatedAt"], _numeric_id(product["id"]))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _encode_cursor(key) -> str:
    return _b64(json.dumps(list(key)))


def _decode_cursor(cursor: str) -> tuple:
    try:
        return tuple(json.loads(base64.b64decode(cursor)))
    except ValueError:
        raise GraphQLError("Invalid cursor for current pagination sort.") from None


def _lower_bound(keys: list[tuple], query: str | None) -> int:
    # Sorted by updatedAt, so a lower bound on it is a bisection, not a scan.
    start = 0
    for op, value in FILTER_RE.findall(query or ""):
        if op in (">", ">="):
            bound = _iso_z(value)
            probe = (bound, float("inf")) if op == ">" else (bound, -1)
            start = max(start, bisect.bisect_right(keys, probe) if op == ">" else bisect.bisect_left(keys, probe))
    return start


def _iso_z(value: str) -> str:
    when = datetime.fromisoformat(value)
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(product: dict, query: str | None) -> bool:
    if not query:
        return True
    updated = datetime.fromisoformat(product["updatedAt"])
    for op, value in FILTER_RE.findall(query):
        bound = datetime.fromisoformat(value)
        if bound.tzinfo is None:
            bound = bound.replace(tzinfo=timezone.utc)
        ok = {">": updated > bound, ">=": updated >= bound, "<": updated < bound, "<=": updated <= bound}[op]
        if not ok:
            return False
    return True


EVENT_TERM_RE = re.compile(r"(\w+):(>=|<=|>|<)?'?([^' ]+)'?")


def _event_matches(event: dict, query: str | None) -> bool:
    """Shopify's search syntax as far as the pipeline uses it: `a:b AND c:d AND created_at:>='...'`."""
    for name, op, value in EVENT_TERM_RE.findall(query or ""):
        if name == "action" and event["action"] != value:
            return False
        if name == "subject_type" and event["subjectType"] != value.upper():
            return False
        if name == "created_at":
            created, bound = datetime.fromisoformat(event["createdAt"]), datetime.fromisoformat(value)
            bound = bound if bound.tzinfo else bound.replace(tzinfo=timezone.utc)
            if not {">": created > bound, ">=": created >= bound, "<": created < bound, "<=": created <= bound,
                    "": created == bound}[op]:
                return False
    return True
