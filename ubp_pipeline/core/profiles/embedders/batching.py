"""Variable-length token sequences kept flat, and batches of similar length.

The data set is never padded as a whole: each batch gathers its rows from one flat (n_events, n_fields) tensor and
is padded only to its own longest sequence, and batches are drawn from pools of users sorted by length so that this
longest sequence is close to the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ubp_pipeline.core.sequences.vocabulary import PAD

POOL_BATCHES = 16  # batches per length-sorted pool: enough to find similar lengths, few enough to keep batches random


@dataclass(frozen=True)
class RaggedTokens:
    """Token ids of many sequences: sequence i owns rows ``offsets[i]:offsets[i + 1]`` of ``tokens``."""

    tokens: torch.Tensor  # (n_events, n_fields) int64
    offsets: np.ndarray  # (n_sequences + 1,) int64

    @classmethod
    def from_fields(cls, tokens: dict[str, np.ndarray], offsets: np.ndarray) -> RaggedTokens:
        """Stack flat per-field ids (columns in the dict's order)."""
        return cls(torch.from_numpy(np.stack(list(tokens.values()), axis=1)), np.asarray(offsets, dtype=np.int64))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def padded(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (batch, longest, n_fields) padded with PAD at the end, lengths (batch,)) of sequences ``rows``."""
        lengths = torch.from_numpy(self.lengths[rows])
        steps = torch.arange(int(lengths.max()))
        index = torch.from_numpy(self.offsets[rows])[:, None] + steps
        real = steps < lengths[:, None]
        batch = self.tokens[torch.where(real, index, 0)]
        batch[~real] = PAD
        return batch, lengths

    def events(self, rows: np.ndarray, from_step: int = 0) -> torch.Tensor:
        """The tokens of sequences ``rows`` concatenated (n, n_fields), each from its ``from_step``-th event on."""
        starts = self.offsets[rows] + from_step
        lengths = np.maximum(self.offsets[np.asarray(rows) + 1] - starts, 0)
        return self.tokens[torch.from_numpy(flat_ranges(starts, lengths))]


def flat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of ``range(start, start + count)`` for each pair, without a Python loop."""
    return np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Row indices per batch, rows of similar length together.

    With ``rng`` (training): rows are shuffled, cut into pools of ``POOL_BATCHES`` batches, each pool sorted by
    length and cut into batches, and the batch order is shuffled. Without (inference): one global length sort,
    deterministic.
    """
    if rng is None:
        order = np.argsort(-lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    shuffled = rng.permutation(len(lengths))
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(shuffled), pool):
        members = shuffled[start : start + pool]
        members = members[np.argsort(-lengths[members], kind="stable")]
        batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
