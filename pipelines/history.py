"""The views the query command offers: SQL over the dataset's tables (storage/datasets.py).

Views, not maintained tables: the dataset stays an append-only log of versions, and each view is
computed when asked (bench/history.py measures them at a million products with ten versions each).

- products_history: one row per product per content version. A version starts only when the
  product's content changed: a hash over the model's columns, not fetched_at, run_id, raw_hash,
  schema_version or source_updated_at (a change the model does not keep moves Shopify's updatedAt
  and nothing else), so a semantically identical re-read or a normalizer version bump makes no row.
  `valid_from` is the provider's update time where it has one (Shopify's updatedAt), else the time
  the version was first fetched (Amazon, eBay). Versions are ordered by it whatever order they were
  fetched in; of two with one timestamp the one fetched last stands. `valid_to` is the next
  version's valid_from, or the deletion's time (`is_deleted`), or null while current: one
  unbroken chain per product, exactly one current row per live product. Only Shopify says a
  product was deleted; Amazon's and eBay's chains never close.
- products_current: the current row of each live product. price_changes: each change of a
  product's price between consecutive versions.
- orders_current, order_lines_current: each order's latest version (by updated_at, then fetch) and its lines.
"""

from __future__ import annotations

from normalize.models import Product

KEY = "source, account, source_id"
NOT_CONTENT = {"source", "account", "source_id", "fetched_at", "run_id", "raw_hash", "schema_version",
               "source_updated_at"}
CONTENT = [name for name in Product.model_fields if name not in NOT_CONTENT]
COLUMNS = ", ".join(name for name in Product.model_fields if name not in {"source", "account", "source_id"})
NO_DELETIONS = ("SELECT NULL::VARCHAR AS source, NULL::VARCHAR AS account, NULL::VARCHAR AS source_id, "
                "NULL::TIMESTAMPTZ AS deleted_at WHERE false")

# The versions and deletions, narrow: the key, the time, the content hash and the fetch order,
# never the wide columns (description, variants), which a sort would drag along. One sort, by
# product, then time, then fetch order: of the rows of one instant the last stands (a deletion,
# else the version fetched last), and the row before an instant's first is the previous
# instant's standing row, whose content hash says whether this instant starts a new version.
# Instants of one row (nearly all) are decided there; the rare instants of several rows are
# grouped. `version_id` names the row a version came from (with the key and valid_from) so that
# the wide columns are joined back only for the rows a view returns.
EVENTS = f"""
events AS (
  SELECT {KEY}, coalesce(source_updated_at, fetched_at) AS valid_from, false AS deletion,
         hash({", ".join(CONTENT)}) AS content_hash, hash(fetched_at, run_id, raw_hash) AS version_id,
         fetched_at, run_id, raw_hash
  FROM products
  UNION ALL BY NAME
  SELECT {KEY}, min(deleted_at) AS valid_from, true AS deletion
  FROM {{deletions}} GROUP BY {KEY}
), ordered AS (
  SELECT {KEY}, valid_from, deletion, content_hash, version_id,
         lag(valid_from) OVER w AS before_from, lead(valid_from) OVER w AS after_from,
         lag(content_hash) OVER w AS before_hash, row_number() OVER w AS n
  FROM events
  WINDOW w AS (PARTITION BY {KEY} ORDER BY valid_from, deletion, fetched_at, run_id, raw_hash)
), one_per_instant AS (
  SELECT {KEY}, valid_from, deletion, content_hash, version_id, before_hash FROM ordered
  WHERE before_from IS DISTINCT FROM valid_from AND after_from IS DISTINCT FROM valid_from
  UNION ALL
  SELECT {KEY}, valid_from, last.deletion, last.content_hash, last.version_id, first.before_hash FROM (
    SELECT {KEY}, valid_from,
           arg_max({{'deletion': deletion, 'content_hash': content_hash, 'version_id': version_id}}, n) AS last,
           arg_min({{'before_hash': before_hash}}, n) AS first
    FROM ordered WHERE before_from = valid_from OR after_from = valid_from GROUP BY {KEY}, valid_from)
), starts AS (
  SELECT {KEY}, valid_from, deletion, version_id FROM one_per_instant WHERE content_hash IS DISTINCT FROM before_hash
)"""
WIDE = ", ".join(f"p.{name}" for name in COLUMNS.split(", "))
JOIN_WIDE = """JOIN products AS p
  ON p.source = c.source AND p.account = c.account AND p.source_id = c.source_id
 AND coalesce(p.source_updated_at, p.fetched_at) = c.valid_from AND hash(p.fetched_at, p.run_id, p.raw_hash) = c.version_id"""

PRODUCTS_HISTORY = f"""
WITH events AS (
  SELECT {KEY}, coalesce(source_updated_at, fetched_at) AS valid_from, false AS deletion,
         hash({", ".join(CONTENT)}) AS content_hash, {COLUMNS}
  FROM products
  UNION ALL BY NAME
  SELECT {KEY}, min(deleted_at) AS valid_from, true AS deletion
  FROM {{deletions}} GROUP BY {KEY}
), one_per_instant AS (
  SELECT * FROM events
  QUALIFY row_number() OVER (PARTITION BY {KEY}, valid_from
                             ORDER BY deletion DESC, fetched_at DESC, run_id DESC, raw_hash DESC) = 1
), changes AS (
  SELECT *, content_hash IS DISTINCT FROM lag(content_hash) OVER (PARTITION BY {KEY} ORDER BY valid_from) AS starts
  FROM one_per_instant
), chain AS (
  SELECT *, lead(valid_from) OVER w AS valid_to, coalesce(lead(deletion) OVER w, false) AS is_deleted
  FROM changes WHERE starts
  WINDOW w AS (PARTITION BY {KEY} ORDER BY valid_from)
)
SELECT {KEY}, valid_from, valid_to, valid_to IS NULL AS is_current, is_deleted, {COLUMNS}
FROM chain WHERE NOT deletion
"""

# The current row without the history: each product's latest start of a content run, unless
# that is its deletion.
PRODUCTS_CURRENT = f"""
WITH {EVENTS}, latest AS (
  SELECT {KEY}, max(valid_from) AS valid_from, arg_max(version_id, valid_from) AS version_id,
         arg_max(deletion, valid_from) AS deletion
  FROM starts GROUP BY {KEY}
)
SELECT c.source, c.account, c.source_id, c.valid_from, {WIDE}
FROM latest AS c {JOIN_WIDE}
WHERE NOT c.deletion
"""

PRICE_CHANGES = f"""
SELECT source, account, source_id, title, currency, old_price, price AS new_price, valid_from AS changed_at
FROM (SELECT *, lag(price) OVER w AS old_price, row_number() OVER w AS n FROM products_history
      WINDOW w AS (PARTITION BY {KEY} ORDER BY valid_from))
WHERE n > 1 AND price IS DISTINCT FROM old_price
"""

ORDERS_CURRENT = """
SELECT * FROM orders
QUALIFY row_number() OVER (PARTITION BY source, account, order_id
                           ORDER BY updated_at DESC NULLS LAST, fetched_at DESC, raw_hash DESC) = 1
"""

ORDER_LINES_CURRENT = """
SELECT l.* FROM order_lines AS l
SEMI JOIN orders_current AS o
  ON l.source = o.source AND l.account = o.account AND l.order_id = o.order_id AND l.order_raw_hash = o.raw_hash
"""

# (view, the tables it needs, its SQL), in the order --list prints them and each is created (a view
# after those it reads); a table itself is a view of the same name. A view whose tables are not
# all there is left out.
VIEWS = (
    ("products", ("products",), None),
    ("products_history", ("products",), PRODUCTS_HISTORY),
    ("products_current", ("products",), PRODUCTS_CURRENT),
    ("price_changes", ("products",), PRICE_CHANGES),
    ("product_deletions", ("product_deletions",), None),
    ("orders", ("orders",), None),
    ("order_lines", ("order_lines",), None),
    ("orders_current", ("orders",), ORDERS_CURRENT),
    ("order_lines_current", ("orders", "order_lines"), ORDER_LINES_CURRENT),
    ("runs", ("runs",), None),
)


def view_statements(tables: set[str]) -> list[tuple[str, str | None]]:
    """(view name, its CREATE VIEW statement, or None for a table registered as it is) for each
    view whose tables exist."""
    deletions = "product_deletions" if "product_deletions" in tables else f"({NO_DELETIONS})"
    statements = []
    for name, needs, sql in VIEWS:
        if not set(needs) <= tables:
            continue
        statements.append((name, None if sql is None else f"CREATE VIEW {name} AS {sql.replace('{deletions}', deletions)}"))
    return statements
