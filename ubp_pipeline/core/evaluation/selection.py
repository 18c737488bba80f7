"""Which blocks go into the profile, decided by the backtest: forward selection on the total score, beyond noise.

Start from the best single block (highest total); each round, try adding every remaining block, take the addition
with the highest total, and keep it only when the paired bootstrap interval of its gain over the current set lies
above 0; stop at the first round without such a gain. The chosen set is therefore never below the best single
block, and every block in it earned its place against the noise of the scoring window. Changing the default set
(every block but the opt-in ones) must be earned as well: the chosen set replaces it only when it beats it beyond
noise (on a small or noisy window forward selection stops early, and the default ensemble stays).

The decision for day D saw purchases up to D + 28 (``evidence_until``): it may shape profiles of that day or later,
never a profile that is evaluated for an earlier day (universal_profiles and the backtest both enforce this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ubp_pipeline.core.common.markdown_tables import markdown_table
from ubp_pipeline.core.evaluation.noise import beyond_noise, interval

TotalScorer = Callable[[tuple[str, ...]], tuple[float, np.ndarray]]  # blocks -> (total score, its bootstrap draws)


@dataclass(frozen=True)
class Trial:
    """One set of blocks tried in one round, its total with interval, and its gain over the round's starting set."""

    round: int
    blocks: list[str]
    total: float
    lower: float
    upper: float
    gain_lower: float | None  # None for the starting block
    gain_upper: float | None
    accepted: bool


def forward_select(blocks: list[str], total_of: TotalScorer, default: list[str] | None = None) -> tuple[list[str], list[Trial]]:
    """The chosen blocks (in ``blocks`` order) and every trial that led to them (see the module docstring).
    ``default`` (all of ``blocks`` when None) is the set that stays unless the selection beats it beyond noise; an
    empty one (only opt-in blocks to choose from) leaves the forward choice as it is."""
    order = {name: i for i, name in enumerate(blocks)}

    def key(names) -> tuple[str, ...]:
        return tuple(sorted(names, key=order.__getitem__))

    default = key(blocks if default is None else default)

    singles = {name: total_of((name,)) for name in blocks}
    best = max(blocks, key=lambda name: singles[name][0])
    chosen, (current, current_draws) = [best], singles[best]
    trials = [Trial(0, [best], current, *interval(current_draws), None, None, True)]
    for step in range(1, len(blocks)):
        tried = {name: total_of(key([*chosen, name])) for name in blocks if name not in chosen}
        if not tried:
            break
        pick = max(tried, key=lambda name: tried[name][0])
        gains = {name: interval(draws - current_draws) for name, (_, draws) in tried.items()}
        accepted = tried[pick][0] > current and beyond_noise(*gains[pick])
        for name, (total, draws) in tried.items():
            trials.append(Trial(step, list(key([*chosen, name])), total, *interval(draws), *gains[name], accepted and name == pick))
        if not accepted:
            break
        chosen, (current, current_draws) = list(key([*chosen, pick])), tried[pick]
    if default and tuple(chosen) != default:
        standing, standing_draws = total_of(default)
        lower, upper = interval(current_draws - standing_draws)
        beats_default = current > standing and beyond_noise(lower, upper)
        trials.append(
            Trial(trials[-1].round + 1, list(default), standing, *interval(standing_draws), -upper, -lower, not beats_default)
        )
        if not beats_default:
            chosen = list(default)
    return chosen, trials


def trials_markdown(trials: list[dict]) -> str:
    """The evidence (trials as dicts) as a table: one line per set tried, its total, interval and gain interval."""
    frame = pd.DataFrame(trials)
    frame["blocks"] = frame["blocks"].map(" + ".join)
    return markdown_table(frame)
