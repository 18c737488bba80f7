"""Where the data lives and which days exist, read once from the environment (the embedded demo by default).

The Dagster partitions are built from these values when the code location loads, so they come from the environment
rather than run config; `ubp run` / `ubp ui` detect the day range of a real source and export it before loading.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

DEMO_FIRST_DAY = date(2022, 6, 23)  # the challenge data starts on this day; the demo keeps the same calendar
DEMO_DAYS = 120
DEMO_HOME = Path("data") / "demo"
DEFAULT_LOOKBACK_DAYS = 180


@dataclass(frozen=True)
class Settings:
    source_dir: Path
    home: Path
    first_day: date
    last_day: date
    lookback_days: int

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def artifact_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def is_demo(self) -> bool:
        return self.source_dir == (DEMO_HOME / "source").resolve()

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        source = Path(env.get("UBP_SOURCE_DIR", DEMO_HOME / "source")).resolve()
        default_home = DEMO_HOME if source == (DEMO_HOME / "source").resolve() else Path("data") / source.name
        first_day = date.fromisoformat(env.get("UBP_FIRST_DAY", DEMO_FIRST_DAY.isoformat()))
        last_default = first_day + timedelta(days=DEMO_DAYS - 1)
        settings = cls(
            source_dir=source,
            home=Path(env.get("UBP_HOME", default_home)).resolve(),
            first_day=first_day,
            last_day=date.fromisoformat(env.get("UBP_LAST_DAY", last_default.isoformat())),
            lookback_days=int(env.get("UBP_LOOKBACK_DAYS", DEFAULT_LOOKBACK_DAYS)),
        )
        if settings.last_day < settings.first_day:
            raise ValueError(f"UBP_LAST_DAY {settings.last_day} is before UBP_FIRST_DAY {settings.first_day}")
        return settings
