"""Run the SQL files in sql/: values are always bound parameters, never formatted into the text.

The files are read through the package (``ubp_pipeline/sql`` links to the repository's ``sql/`` and is packaged
with the wheel), so an installed copy finds them as an editable checkout does.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import duckdb

SQL_DIR = resources.files("ubp_pipeline") / "sql"
_PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_STATEMENT_END = re.compile(r";\s*(?:--[^\n]*)?\n")


@cache
def read_sql(name: str) -> tuple[str, ...]:
    """The statements of ``sql/<name>.sql`` (``name`` = layer/file, e.g. ``sequences/user_events``), split at
    semicolons that end a line."""
    text = (SQL_DIR / f"{name}.sql").read_text()
    statements = [s.strip() for s in _STATEMENT_END.split(text + "\n")]
    return tuple(s for s in statements if _has_code(s))


def _has_code(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


def run_sql(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> duckdb.DuckDBPyConnection:
    """Execute every statement of a SQL file, each with exactly the parameters it names; returns the last result."""
    result = con
    for statement in read_sql(name):
        wanted = dict.fromkeys(_PARAMETER.findall(statement))
        missing = [p for p in wanted if p not in params]
        if missing:
            raise KeyError(f"sql/{name}.sql needs parameter(s) {missing}")
        result = con.execute(statement, {p: params[p] for p in wanted})
    return result


def query_sql(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> duckdb.DuckDBPyRelation:
    """A lazy relation over a single-statement SQL file, for streaming its result as Arrow batches."""
    (statement,) = read_sql(name)
    return con.sql(statement, params={p: params[p] for p in dict.fromkeys(_PARAMETER.findall(statement))})
