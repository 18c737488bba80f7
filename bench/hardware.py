"""The machine a benchmark ran on, written into every result so that figures are never quoted without it."""

import os
import platform
import resource
from pathlib import Path


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def gpu_model() -> str:
    """The CUDA device's name, or "none"; asks torch only where it is installed."""
    try:
        import torch
    except ImportError:
        return "none"
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def cores() -> int:
    return len(os.sched_getaffinity(0))


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe(threads: int, load_before: list[float]) -> dict:
    """The hardware block of a result file: CPU, cores, torch threads and version, load around the run."""
    import torch

    return {
        "cpu_model": cpu_model(),
        "cores": cores(),
        "threads": threads,
        "machine": platform.machine(),
        "torch": torch.__version__,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
