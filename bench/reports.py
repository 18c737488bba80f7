"""Results pages that a rerun rewrites while keeping the sections it did not measure."""

from __future__ import annotations

from pathlib import Path

from ubp_pipeline.core.common.atomic import atomic_path


def write_keeping(page: Path, text: str, kept_heading: str) -> None:
    """Write ``text`` to ``page``, followed by the page's section from ``kept_heading`` to its end, if it has one: a
    section measured elsewhere (e.g. on a GPU) that the script writing the rest cannot reproduce."""
    previous = page.read_text() if page.exists() else ""
    kept = previous[previous.index(kept_heading) :] if kept_heading in previous else ""
    with atomic_path(page) as tmp:
        tmp.write_text(text + (f"\n{kept}" if kept else ""))
