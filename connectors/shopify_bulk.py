"""Shopify bulk operations for full refreshes: start one, poll it, download its JSONL result from
the signed URL (no Shopify credentials, never cached, never logged whole), and assemble products
from lines linked by `__parentId`, spilling to disk so memory stays flat at any catalog size.

The operation's id is checkpointed as soon as it exists, so a run that dies while polling is
followed by one that resumes polling the same operation instead of starting another.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from connectors import jsondecode
from connectors.local import mark_local
from connectors.http import ProviderError, ResponseError

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
# A downloaded result of fewer lines is read in this process: starting worker processes (about a
# second each) would cost more than a second core saves.
SPLIT_MIN_LINES = 50_000


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
    """Yield every product of a completed bulk operation, resuming a checkpointed one."""
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
        mark_local()  # what comes next is read from disk: a prefetching thread would only cost CPU
        result = DownloadedResult(path, Path(spool) / "assemble.sqlite", child)
        if result.has_lines(SPLIT_MIN_LINES):
            yield result  # the run may read it in several processes (pipelines/bulk_split.py) while this waits
        else:
            yield from result
    checkpoint.clear()


@dataclass(frozen=True)
class DownloadedResult:
    """A bulk result on local disk, yielded in place of its products when large enough to be worth
    reading in several processes. Iterated, it yields its products here (`assemble_file`); or
    `ranges(k)` cuts it at product lines and `products(start, end)` reads one range, each range
    checked for Shopify's grouped order first (`grouped(start, end)`)."""

    path: Path
    spool: Path
    child: str = "variants"

    def __iter__(self) -> Iterator[dict]:
        return assemble_file(self.path, self.spool, self.child)

    def has_lines(self, count: int) -> bool:
        """True if the file has at least `count` lines (reads no further than that)."""
        seen = 0
        with self.path.open("rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                seen += block.count(b"\n")
                if seen >= count:
                    return True
        return False

    def ranges(self, parts: int) -> list[tuple[int, int]]:
        """About `parts` byte ranges covering the file, each starting at a product's line (one with
        no __parentId), so a product and its variants' lines are in one range."""
        size, points = self.path.stat().st_size, [0]
        with self.path.open("rb") as lines:
            for k in range(1, parts):
                lines.seek(max(size * k // parts, points[-1]))
                lines.readline()  # the rest of a line cut in two
                while True:
                    at, line = lines.tell(), lines.readline()
                    if not line or (line.strip() and line.rfind(b'"__parentId"', -200) < 0):
                        break
                if at > points[-1]:
                    points.append(at)
        return list(zip(points, points[1:] + [size]))

    def grouped(self, start: int, end: int) -> bool:
        """True if each child line of the range names the product line last before it (in the range)."""
        return _grouped(_lines_between(self.path, start, end))

    def products(self, start: int, end: int) -> Iterator[dict]:
        """The products of a range checked as grouped, in file order (NotGrouped if a line misleads)."""
        return _stream_grouped(chain.from_iterable(_lines_between(self.path, start, end)), self.child)


def _lines_between(path: Path, start: int, end: int) -> Iterator[list[bytes]]:
    """The lines from byte `start` (a line's first) up to `end`, in blocks of about 1 MB."""
    with path.open("rb") as lines:
        lines.seek(start)
        at = start
        while at < end:
            block = lines.readlines(1 << 20)
            if not block:
                return
            if at + sum(map(len, block)) > end:
                kept = []
                for line in block:
                    if at >= end:
                        break
                    kept.append(line)
                    at += len(line)
                yield kept
                return
            at += sum(map(len, block))
            yield block


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


# A line's top-level id or __parentId, read from its bytes without decoding it: the object's first
# member "id", or its last member "__parentId", each a plain string (Shopify writes both so).
_PARENT_ID = re.compile(rb'\s*\{\s*"id"\s*:\s*"([^"\\]*)"\s*[,}]')
_CHILD_OF = re.compile(rb'[,{]\s*"__parentId"\s*:\s*"([^"\\]*)"\s*\}\s*')


class NotGrouped(ResponseError):
    """A line of a result read as grouped belongs to a product other than the one before it."""


def assemble_file(path: Path, spool: Path, child: str = "variants") -> Iterator[dict]:
    """Products with their variants from a bulk result file, in file order.

    Shopify's result usually has each product's line followed by its variants' lines, but it does
    not promise so. A quick pass over the lines' first and last bytes checks; grouped, the
    products stream out in a second pass that decodes each line once, with no index (and checks
    each variant's decoded __parentId against its product's id). Otherwise (or when a line is
    written in a form the quick pass does not read) the on-disk index of `assemble` takes any order.
    """
    with path.open("rb") as lines:
        grouped = _grouped(iter(lambda: lines.readlines(1 << 20), []))
    with path.open("rb") as lines:
        yield from (_stream_grouped(lines, child) if grouped else assemble(lines, spool, child))


def _grouped(blocks) -> bool:
    """True if each child line names the product line last before it (`blocks`: lists of lines)."""
    current = None
    for block in blocks:
        for line in block:
            at = line.rfind(b'"__parentId"', -200)
            if at >= 0:
                if _child_of(line, at) != current:
                    return False
            elif line.strip():
                current = _parent_id(line)
                if current is None:
                    return False
    return True


def _child_of(line: bytes, at: int) -> bytes | None:
    """The __parentId of a line whose last member it is, else None."""
    end = line.find(b'"', at + 14)
    if line[at - 1:at] == b"," and line[at + 12:at + 14] == b':"' and line[end:].rstrip() == b'"}':
        value = line[at + 14:end]  # Shopify's compact form
        return value if b"\\" not in value else None
    match = _CHILD_OF.fullmatch(line, max(line.rfind(b",", 0, at), line.rfind(b"{", 0, at), 0))
    return match[1] if match else None


def _parent_id(line: bytes) -> bytes | None:
    """The id of a line whose first member it is, else None."""
    end = line.find(b'"', 7)
    if line.startswith(b'{"id":"') and line[end + 1:end + 2] in (b",", b"}"):
        value = line[7:end]  # Shopify's compact form
        return value if b"\\" not in value else None
    match = _PARENT_ID.match(line)
    return match[1] if match else None


def _stream_grouped(lines, child: str = "variants") -> Iterator[dict]:
    """Products from lines checked as grouped: each line decoded once, each variant's decoded
    __parentId compared with its product's id (a line the quick check misread fails loudly)."""
    product = None
    for line in lines:
        if not line.strip():
            continue
        record = jsondecode.loads(line)
        parent = record.get("__parentId")
        if parent is None:
            if product is not None:
                yield product
            product = record
            product[child] = []
        elif product is not None and parent == product.get("id"):
            del record["__parentId"]  # as _variant does
            product[child].append(record)
        else:
            raise NotGrouped("shopify", "a line of the bulk result belongs to a product other than the one "
                             "before it, against the check of its bytes; nothing from it was written")
    if product is not None:
        yield product


def assemble(lines, spool: Path, child: str = "variants") -> Iterator[dict]:
    """Products with their variants from JSONL lines in any order, using an on-disk index. A
    variant's __parentId, which only said where it belongs, is dropped (raw_hash ignores it)."""
    # A run's puller may hand this generator to another thread between two records (never while
    # it runs): the connection goes with it.
    con = sqlite3.connect(spool, isolation_level=None, check_same_thread=False)
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
            record = jsondecode.loads(text)
            parent = record.get("__parentId")
            if parent is None:
                con.execute("INSERT INTO parents (id, body) VALUES (?, ?)", (record.get("id"), text))
            else:
                con.execute("INSERT INTO children VALUES (?, ?)", (parent, text))
        con.execute("COMMIT")
        con.execute("CREATE INDEX children_parent ON children(parent)")
        for product_id, body in _parents(con):
            product = jsondecode.loads(body)
            product[child] = [_variant(b) for (b,) in
                                   con.execute("SELECT body FROM children WHERE parent = ?", (product_id,))]
            yield product
    finally:
        con.close()


def _variant(line: str) -> dict:
    """A variant line's record without its __parentId (a variant reads as it does from a paged query)."""
    record = jsondecode.loads(line)
    record.pop("__parentId", None)
    return record


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
