"""Training progress: a bar on the terminal and one callback per epoch, so callers can log and record curves."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainingHistory:
    """Per-epoch metrics of one training run, in order."""

    epochs: list[dict[str, float]] = field(default_factory=list)

    def record(self, epoch: int, metrics: dict[str, float], callback: EpochCallback | None = None) -> None:
        self.epochs.append({"epoch": epoch, **metrics})
        if callback is not None:
            callback(epoch, metrics)

    def series(self, name: str) -> list[float]:
        return [row[name] for row in self.epochs if name in row]

    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}


def progress_bar(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A tqdm bar when a person is watching a terminal; silent in tests, CI logs and the Dagster UI."""
    return iter(tqdm(iterable, desc=description, total=total, leave=False, disable=not sys.stderr.isatty()))
