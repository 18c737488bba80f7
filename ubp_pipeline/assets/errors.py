"""Which failures are worth retrying: bad input and refused requests are not, anything else may be transient."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from ubp_pipeline.core.warehouse.ingest import ReconciliationError


@contextmanager
def no_retry_for_bad_input() -> Iterator[None]:
    """Turn the core's input and validation errors (ValueError family, failed reconciliation) into a final Failure,
    so the retry policy only re-runs steps that hit something transient (a held lock, an I/O error)."""
    try:
        yield
    except (ValueError, ReconciliationError) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
