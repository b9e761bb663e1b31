"""`run_pipeline.py query`: DuckDB SQL over the dataset's views, printed or written in a format.

The data reaches DuckDB as Arrow (storage/datasets.py: one mapping of table name to dataset for
the configured destination), registered with an in-memory DuckDB whose extension autoinstall and
autoload are off: a query never downloads an extension, locally or on S3 (what it needs, Parquet,
JSON, ICU, is built into DuckDB's Python package). duckdb is imported by this module alone, which
the command line imports only for this command.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import os
import shutil
import tempfile
import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.history import view_statements

FORMATS = ("table", "csv", "json", "parquet")
DUCKDB_CONFIG = {
    "autoinstall_known_extensions": False,  # never fetch an extension from the network
    "autoload_known_extensions": False,  # nor load one behind the query's back
}


MEMORY_FRACTION = 4  # DuckDB's memory_limit by default: a quarter of the machine's RAM


def default_memory_limit() -> str:
    """A quarter of physical memory: DuckDB's own default (80%) let a query over a big history take
    most of a small machine before spilling; beyond the limit its sorts, joins and aggregates
    spill to a temporary folder. The Arrow scans and the result itself come on top."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf: DuckDB's own default
        return ""
    return f"{max(total // MEMORY_FRACTION // 2**20, 256)}MB"


class QueryError(Exception):
    """The SQL failed (DuckDB's words), or the output cannot be written."""


def connect(tables: dict, memory_limit: str | None = None) -> tuple["duckdb.DuckDBPyConnection", list[str]]:
    """An in-memory DuckDB with each table registered and each view that its tables allow
    created; returns it and the views' names. `memory_limit` (PIPELINE_QUERY_MEMORY, e.g. `2GB`;
    default a quarter of RAM) bounds DuckDB's operators, which spill beyond it to a folder of
    their own in the system's temporary directory (made only if they spill, removed after),
    never the working directory."""
    limit = memory_limit or default_memory_limit()
    # Named, not made: DuckDB creates the folder only if it spills, and removes what it created
    # when the connection goes (the atexit is for a connection still open at exit).
    spill = os.path.join(tempfile.gettempdir(), f"pipeline-query-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    atexit.register(shutil.rmtree, spill, ignore_errors=True)
    try:
        con = duckdb.connect(":memory:", config={**DUCKDB_CONFIG, "temp_directory": spill,
                                                 **({"memory_limit": limit} if limit else {})})
    except duckdb.Error as exc:  # a memory limit DuckDB cannot parse
        raise QueryError(f"PIPELINE_QUERY_MEMORY: {exc}") from None
    con.execute("SET TimeZone = 'UTC'")  # times print in UTC whatever the machine's zone
    for name, data in tables.items():
        con.register(name, data)
    names = []
    for name, statement in view_statements(set(tables)):
        if statement is not None:
            con.execute(statement)
        names.append(name)
    return con, names


def describe(con, views: list[str]) -> list[str]:
    """`name: col type, col type, ...` for each view."""
    lines = []
    for name in views:
        columns = con.execute(f'DESCRIBE "{name}"').fetchall()
        lines.append(f"{name}: " + ", ".join(f"{column} {kind}" for column, kind, *_ in columns))
    return lines


def run(con, sql: str) -> pa.Table:
    """The query's result as Arrow; QueryError with DuckDB's message when it fails."""
    try:
        relation = con.sql(sql)
        return pa.table({}) if relation is None else relation.to_arrow_table()  # None: a statement, no rows
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None


def render(table: pa.Table, fmt: str) -> str:
    """The result as text: an aligned table, CSV with a header, or one JSON object per line."""
    rows = table.to_pylist()
    if fmt == "json":
        return "".join(json.dumps(row, default=_json_value, ensure_ascii=False) + "\n" for row in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows([[_text(row[name]) for name in table.column_names] for row in rows])
        return out.getvalue()
    cells = [[_text(row[name]) for name in table.column_names] for row in rows]
    widths = [max([len(name), *(len(r[i]) for r in cells)]) for i, name in enumerate(table.column_names)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    body = [line(table.column_names), line(["-" * w for w in widths]), *map(line, cells)]
    return "\n".join(body) + f"\n({len(rows)} row{'' if len(rows) == 1 else 's'})\n"


def write(table: pa.Table, fmt: str, output: Path | None) -> str | None:
    """Write the result to `output` (staged, then renamed into place), or return the text to print."""
    if fmt == "parquet":
        if output is None:
            raise QueryError("--format parquet writes a file: add --output FILE")
        return _atomic(output, lambda handle: pq.write_table(table, handle, compression="zstd"))
    text = render(table, fmt)
    if output is None:
        return text
    return _atomic(output, lambda handle: handle.write(text.encode("utf-8")))


def _atomic(output: Path, fill) -> None:
    staging = output.with_name(f".{output.name}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(staging, "wb") as handle:
            fill(handle)
        os.replace(staging, output)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise QueryError(f"cannot write {output}: {exc.strerror or exc}") from None
    return None


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_json_value, ensure_ascii=False)
    return str(value)


def _json_value(value):
    if isinstance(value, Decimal):
        return str(value)  # exact: money is never a float
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def command(sql: str | None, fmt: str, output: Path | None, list_views: bool, settings) -> None:
    """The `query` command: the configured destination's tables, the views, then the SQL's result
    printed or written (click's errors for a usage mistake or a failed query)."""
    import click

    from storage.datasets import destination_tables
    from storage.destination import DestinationSettings, open_destination

    if not list_views and not sql:
        raise click.UsageError("give the SQL to run, or --list to see the views")
    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet writes a file: add --output FILE")
    destination = open_destination(settings.destination or DestinationSettings(settings.data_dir, settings.logs_dir))
    try:
        con, views = connect(destination_tables(destination), getattr(settings, "query_memory", None))
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    if list_views:
        click.echo("\n".join(describe(con, views)) if views else f"No data yet in {destination.url}.")
        return
    try:
        text = write(run(con, sql), fmt, output)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    if text is not None:
        click.echo(text, nl=False)
