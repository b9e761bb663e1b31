"""Shopify bulk operations for full refreshes: start one, poll it, download its JSONL result from
the signed URL (no Shopify credentials, never cached, never logged whole), and assemble products
from lines linked by `__parentId`, spilling to disk so memory stays flat at any catalog size.

The operation's id is checkpointed as soon as it exists, so a run that dies while polling is
followed by one that resumes polling the same operation instead of starting another.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from connectors.http import ProviderError

log = logging.getLogger("pipeline.shopify")

POLL_INTERVAL_S = 5.0
MAX_POLL_INTERVAL_S = 60.0
TERMINAL = {"COMPLETED", "FAILED", "CANCELED", "EXPIRED"}
START_MUTATION = """mutation StartBulk($query: String!) {
  bulkOperationRunQuery(query: $query) { bulkOperation { id status } userErrors { field message } }
}"""
# node(id:) works on every API version (bulkOperation(id:) arrived in 2026-01).
POLL_QUERY = """query PollBulk($id: ID!) {
  node(id: $id) { ... on BulkOperation { id status errorCode objectCount rootObjectCount url partialDataUrl } }
}"""
COUNT_QUERY = "query CountProducts { productsCount { count } }"


class BulkUnavailable(ProviderError):
    """Bulk operations are not permitted (or one is already running): page instead."""


class BulkFailed(ProviderError):
    """The bulk operation ended FAILED, CANCELED or EXPIRED."""


def bulk_query(product_fields: str, variant_fields: str) -> str:
    """The bulk query: every product with every variant (nested connections need no `first`)."""
    return ("{ products { edges { node { " + product_fields +
            " variants { edges { node { " + variant_fields + " } } } } } } }")


class Checkpoint:
    """Where the in-flight operation id is kept between runs (a get/set/delete store)."""

    def __init__(self, store=None, key: str = "shopify_bulk_operation"):
        self.store, self.key, self.memory = store, key, None

    def get(self):
        return self.store.get(self.key) if self.store is not None else self.memory

    def set(self, value) -> None:
        if self.store is not None:
            self.store.set(self.key, value)
        self.memory = value

    def clear(self) -> None:
        if self.store is not None:
            self.store.delete(self.key)
        self.memory = None


def run(api, query: str, checkpoint: Checkpoint, spool_dir: Path | None = None, child: str = "variants") -> Iterator[dict]:
    """Yield every record (product, order) of a completed bulk operation with its `child` lines
    (variants, line items) as a list, resuming a checkpointed operation."""
    operation_id = checkpoint.get()
    if operation_id:
        log.info("shopify: resuming bulk operation %s", operation_id)
    else:
        operation_id = _start(api, query)
        checkpoint.set(operation_id)
    operation = _wait(api, operation_id)
    if operation["status"] != "COMPLETED":
        checkpoint.clear()  # a dead operation is never resumed; the next run starts afresh
        raise BulkFailed("shopify", f"bulk operation {operation_id} ended {operation['status']}"
                         + (f" ({operation.get('errorCode')})" if operation.get("errorCode") else "")
                         + "; nothing from it was written. The next run starts a new one")
    if not operation.get("url"):  # a completed operation over an empty shop has no file
        checkpoint.clear()
        return
    with tempfile.TemporaryDirectory(dir=spool_dir, prefix="shopify-bulk-") as spool:
        path = api.http.download(operation["url"], Path(spool) / "result.jsonl", what="the bulk result",
                                 next_step="the next run resumes the same operation and downloads it again")
        with path.open("rb") as lines:
            yield from assemble(lines, Path(spool) / "assemble.sqlite", child)
    checkpoint.clear()


def _start(api, query: str) -> str:
    body = api.query(START_MUTATION, {"query": query})
    payload = (body.get("data") or {}).get("bulkOperationRunQuery") or {}
    errors = payload.get("userErrors") or []
    if errors or not payload.get("bulkOperation"):
        message = "; ".join(str(e.get("message")) for e in errors) or "no bulk operation returned"
        raise BulkUnavailable("shopify", f"bulk operation refused: {message}")
    return payload["bulkOperation"]["id"]


def _wait(api, operation_id: str) -> dict:
    interval = POLL_INTERVAL_S
    while True:
        body = api.query(POLL_QUERY, {"id": operation_id})
        operation = (body.get("data") or {}).get("node")
        if not operation:
            raise BulkFailed("shopify", f"bulk operation {operation_id} is unknown to Shopify")
        if operation["status"] in TERMINAL:
            return operation
        log.info("shopify: bulk operation %s %s, %s objects so far", operation_id, operation["status"],
                 operation.get("objectCount"))
        api.http.wait(interval)
        interval = min(interval * 1.5, MAX_POLL_INTERVAL_S)


def assemble(lines, spool: Path, child: str = "variants") -> Iterator[dict]:
    """Records with their children (under `child`) from JSONL lines in any order, using an on-disk index."""
    con = sqlite3.connect(spool, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("CREATE TABLE parents (seq INTEGER PRIMARY KEY, id TEXT, body TEXT)")
        con.execute("CREATE TABLE children (parent TEXT, body TEXT)")
        con.execute("BEGIN")
        for line in lines:
            if not line.strip():
                continue
            text = line.decode() if isinstance(line, bytes) else line
            record = json.loads(text)
            parent = record.get("__parentId")
            if parent is None:
                con.execute("INSERT INTO parents (id, body) VALUES (?, ?)", (record.get("id"), text))
            else:
                con.execute("INSERT INTO children VALUES (?, ?)", (parent, text))
        con.execute("COMMIT")
        con.execute("CREATE INDEX children_parent ON children(parent)")
        for product_id, body in _parents(con):
            product = json.loads(body)
            product[child] = [json.loads(b) for (b,) in
                                   con.execute("SELECT body FROM children WHERE parent = ?", (product_id,))]
            yield product
    finally:
        con.close()


def _parents(con) -> Iterator[tuple[str, str]]:
    """Parents in file order, read in pages so memory never holds them all."""
    last = 0
    while True:
        rows = con.execute("SELECT seq, id, body FROM parents WHERE seq > ? ORDER BY seq LIMIT 1000", (last,)).fetchall()
        if not rows:
            return
        for seq, product_id, body in rows:
            yield product_id, body
        last = rows[-1][0]
