"""Frames as markdown tables for Dagster metadata and reports (pandas' own `to_markdown` needs an extra package)."""

from __future__ import annotations

import numbers

import pandas as pd


def _cell(value: object, digits: int) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, digits: int = 4, index: bool = False) -> str:
    """Floats with ``digits`` significant digits, everything else as text (``|`` escaped)."""
    if index:
        frame = frame.reset_index(names=frame.index.name or "")
    header = [str(column) for column in frame.columns]
    rows = [" | ".join(_cell(value, digits) for value in row) for row in frame.itertuples(index=False)]
    return "\n".join([" | ".join(header), " | ".join("---" for _ in header), *rows])
