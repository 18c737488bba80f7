"""The five event types of the input format and the 16-code text strings they carry."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# Order = the event-type code stored in sequences (the `event_kind` enum in sql/warehouse/schema.sql).
EVENT_TYPES = ("add_to_cart", "remove_from_cart", "product_buy", "page_visit", "search_query")
PRODUCT_EVENT_TYPES = ("add_to_cart", "remove_from_cart", "product_buy")
EVENT_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}
N_CODES = 16

# The column that carries each event type's payload in the source files.
PAYLOAD_COLUMN = {**dict.fromkeys(PRODUCT_EVENT_TYPES, "sku"), "page_visit": "url", "search_query": "query"}

_DIGITS = np.array([list(f"{i:3d}".encode()) for i in range(256)], dtype=np.uint8)


def format_codes(codes: np.ndarray) -> pa.Array:
    """Render (n, 16) uint8 codes as the challenge's numpy-printed strings, e.g. '[ 56 212   3 ...]', vectorised."""
    n = len(codes)
    buf = np.full((n, 1 + 4 * N_CODES), ord(" "), dtype=np.uint8)
    buf[:, 0] = ord("[")
    buf[:, 1:].reshape(n, N_CODES, 4)[:, :, :3] = _DIGITS[codes]
    buf[:, -1] = ord("]")
    return pa.array(buf.view(f"S{buf.shape[1]}").ravel(), type=pa.binary()).cast(pa.string())


def parse_codes(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The (n, 16) uint8 codes of code strings already validated by the warehouse; vectorised over the raw bytes.

    Digit runs never cross strings (each string starts with '[' and ends with ']'), so the flat byte buffer can be
    scanned as a whole.
    """
    array = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    array = array.cast(pa.large_string())
    if array.null_count:
        raise ValueError(f"{array.null_count} code strings are null")
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + n + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]] if n else np.empty(0, np.uint8)
    is_digit = (data >= ord("0")) & (data <= ord("9"))
    edges = np.diff(np.concatenate([[0], is_digit.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(starts) != n * N_CODES:
        raise ValueError(f"expected {N_CODES} codes per string, found {len(starts)} codes in {n} strings")
    digits = data.astype(np.int32) - ord("0")
    value = np.zeros(len(starts), dtype=np.int32)
    for place in range(3):  # codes have at most 3 digits; add the hundreds, tens and units that exist
        position = ends - 1 - place
        has = position >= starts
        value += np.where(has, digits[np.where(has, position, 0)] * 10**place, 0)
    return value.astype(np.uint8).reshape(n, N_CODES)
