"""Where the data lives and which days exist, read once from the environment (the embedded demo by default).

The Dagster partitions are built from these values when the code location loads, so they come from the environment
rather than run config; `ubp run` / `ubp ui` detect the day range of a real source and export it before loading.
UBP_LAST_DAY=live is for a deployment fed every night: the partitions then run up to yesterday (UTC), whatever
day it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ubp_pipeline.core.profiles.registry import active_blocks

DEMO_FIRST_DAY = date(2022, 6, 23)  # the challenge data starts on this day; the demo keeps the same calendar
DEMO_DAYS = 120
DEMO_HOME = Path("data") / "demo"
DEMO_SOURCE = DEMO_HOME / "source"
DEFAULT_LOOKBACK_DAYS = 180
LIVE = "live"


@dataclass(frozen=True)
class Settings:
    source_dir: Path
    home: Path
    first_day: date
    fixed_last_day: date | None  # None = live: yesterday (UTC) at the time of asking
    lookback_days: int
    torch_threads: int = 0  # 0 = one per available core
    executor: str = "in_process"  # see ubp_pipeline/executors.py
    probe: str = "auto"  # the main job's backtest probe: auto (official; sampled users on a CPU), official or quick
    warehouse_memory: str = ""  # DuckDB's memory limit ("" = 80 % of memory, at most 8 GiB)
    opt_in_blocks: tuple[str, ...] = ()  # opt-in blocks to train and embed too ("all" = every one)

    @property
    def last_day(self) -> date:
        return self.fixed_last_day or (datetime.now(UTC).date() - timedelta(days=1))

    @property
    def is_live(self) -> bool:
        return self.fixed_last_day is None

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def artifact_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def blocks(self) -> list[str]:
        """The blocks this deployment trains and embeds: the default ones and the opt-in ones it asked for."""
        return active_blocks(self.opt_in_blocks)

    @property
    def is_demo(self) -> bool:
        return is_demo_source(self.source_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        source = Path(env.get("UBP_SOURCE_DIR", DEMO_SOURCE)).resolve()
        opted_in = tuple(name.strip() for name in env.get("UBP_OPT_IN_BLOCKS", "").split(",") if name.strip())
        active_blocks(opted_in)  # an unknown name fails here, when the code location loads, not in the middle of a run
        if not is_demo_source(source) and not {"UBP_FIRST_DAY", "UBP_LAST_DAY"} <= set(env):
            raise ValueError(
                f"UBP_SOURCE_DIR is {source} but UBP_FIRST_DAY and UBP_LAST_DAY are not both set, so its partitions "
                "would be the demo's days: set them (UBP_LAST_DAY=live for a source fed every night), or give the "
                "source as `--source` to `ubp run`, `ubp ui`, `ubp export` or `ubp recommend`, which detect them"
            )
        first_day = date.fromisoformat(env.get("UBP_FIRST_DAY", DEMO_FIRST_DAY.isoformat()))
        last_day = env.get("UBP_LAST_DAY", (first_day + timedelta(days=DEMO_DAYS - 1)).isoformat())
        settings = cls(
            source_dir=source,
            home=Path(env.get("UBP_HOME", default_home(source))).resolve(),
            first_day=first_day,
            fixed_last_day=None if last_day == LIVE else date.fromisoformat(last_day),
            lookback_days=int(env.get("UBP_LOOKBACK_DAYS", DEFAULT_LOOKBACK_DAYS)),
            torch_threads=int(env.get("UBP_TORCH_THREADS", 0)),
            executor=env.get("UBP_EXECUTOR", "in_process"),
            probe=env.get("UBP_PROBE", "auto"),
            warehouse_memory=env.get("UBP_WAREHOUSE_MEMORY", ""),
            opt_in_blocks=opted_in,
        )
        if settings.last_day < settings.first_day:
            raise ValueError(f"UBP_LAST_DAY {settings.last_day} is before UBP_FIRST_DAY {settings.first_day}")
        return settings


def is_demo_source(source: str | Path) -> bool:
    return Path(source).resolve() == DEMO_SOURCE.resolve()


def default_home(source: str | Path) -> Path:
    """Where a source's warehouse and artifacts go unless UBP_HOME says otherwise: data/demo or data/<source name>."""
    return DEMO_HOME if is_demo_source(source) else Path("data") / Path(source).name
