"""What a crawl's page query asks for beside its records: follow-ups for records whose children
(variants, line items) continue past the page that brought them (aliased fields, their answers
merged into the records), and a companion read (the destroyed products).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from connectors.errors import ResponseError


@dataclass
class Companion:
    """Another read asked for in the same query as a crawl's first page (the destroyed products
    beside the changed ones), so that a run with nothing to do costs one request."""

    declared: str  # its variables' declarations: "$destroyedFirst: Int!, ..."
    field: str  # its aliased field, selection included
    alias: str
    variables: dict
    cost: int  # its requested cost, left free beside the page
    answer: dict | None = None  # its field's answer, once asked (None: never asked, or refused)


def next_children(node, child: str) -> str | None:
    """The cursor after the record's children so far, if they continue (and the record is well formed)."""
    connection = node.get(child) if isinstance(node, dict) else None
    if not isinstance(connection, dict) or not isinstance(node.get("id"), str):
        return None
    page_info = connection.get("pageInfo")
    if not isinstance(page_info, dict) or not page_info.get("hasNextPage"):
        return None
    cursor = page_info.get("endCursor")
    return cursor if isinstance(cursor, str) and cursor else None


def extend(node: dict, child: str, data: dict, alias: str) -> None:
    """Add a follow-up's children to the record's connection. A record deleted meanwhile (its field
    null) keeps what it has; an answer without the field leaves the rest to a query of its own."""
    if alias not in data:
        return
    if data[alias] is None:
        node[child]["pageInfo"] = {"hasNextPage": False, "endCursor": None}
        return
    connection = data[alias].get(child) if isinstance(data[alias], dict) else None
    if not isinstance(connection, dict):
        raise ResponseError("shopify", f"unexpected answer: no {alias}.{child}")
    node[child]["nodes"] = list(node[child].get("nodes") or []) + list(connection.get("nodes") or [])
    node[child]["pageInfo"] = connection.get("pageInfo") or {}


def follow_up_query(page_query: str | None, child_query: str, count: int) -> str:
    """The page query (or, with None, a query of its own) with `count` aliased follow-up fields
    more0..: each the child query's field for record $idN after $afterN, $childFirst children."""
    return combined_query(page_query, *follow_up_fields(child_query, count))


@functools.lru_cache(maxsize=64)
def follow_up_fields(child_query: str, count: int) -> tuple[str, str]:
    """(declarations, fields) of `count` follow-up fields; ("", "") for none."""
    if not count:
        return "", ""
    field = child_query[child_query.index("{") + 1:child_query.rindex("}")].strip()
    fields = "\n  ".join(f"more{i}: " + field.replace("$id", f"$id{i}").replace("$after", f"$after{i}")
                         for i in range(count))
    return ", ".join(f"$id{i}: ID!, $after{i}: String" for i in range(count)) + ", $childFirst: Int!", fields


@functools.lru_cache(maxsize=64)
def combined_query(page_query: str | None, declared: str, fields: str) -> str:
    """The page query with more fields (and their variables' declarations) beside its own; with
    None, a query of those fields alone."""
    if not fields:
        return page_query
    if page_query is None:
        return f"query MoreChildren({declared}) {{\n  {fields}\n}}"
    head, rest = page_query.split(")", 1)  # the first ")" closes the variables' declarations
    return f"{head}, {declared}){rest[:rest.rindex('}')]}  {fields}\n}}"
