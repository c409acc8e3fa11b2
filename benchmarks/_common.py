"""What the benchmark scripts share: timing, the machine record and writing the result JSON.

Every benchmark runs as a script (``.venv/bin/python benchmarks/<name>.py``), so this folder is
first on ``sys.path`` and ``from _common import ...`` works in each of them.

The machine is shared (2 cores, other jobs): every timing keeps the wall-clock time of each call
and the process CPU time (less sensitive to load), and every result records the load average.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Timer", "itk_record", "load_average", "machine", "save_result"]


class Timer:
    """Times calls of a function; keeps the median CPU time of each labelled measurement.

    Examples
    --------
    >>> timed = Timer()
    >>> walls, out = timed(lambda: sum(range(1000)), 3, "sum")
    >>> sorted(timed.cpu)
    ['sum']
    """

    def __init__(self) -> None:
        #: label -> median process CPU seconds of that measurement's calls
        self.cpu: dict[str, float] = {}

    def __call__(
        self, fn: Callable[[], Any], repeat: int, label: str | None = None
    ) -> tuple[list[float], Any]:
        """Wall-clock seconds of ``repeat`` calls of *fn*, and the last call's result.

        With a *label*, the median process CPU time of the calls goes to ``self.cpu[label]``.
        """
        walls, _cpus, out = self._run(fn, repeat, label)
        return walls, out

    def medians(
        self, fn: Callable[[], Any], repeat: int, label: str | None = None
    ) -> tuple[float, float, Any]:
        """Median wall and CPU seconds of ``repeat`` calls, and the last result."""
        walls, cpus, out = self._run(fn, repeat, label)
        return statistics.median(walls), statistics.median(cpus), out

    def _run(
        self, fn: Callable[[], Any], repeat: int, label: str | None
    ) -> tuple[list[float], list[float], Any]:
        walls, cpus, out = [], [], None
        for _ in range(repeat):
            c0, t0 = time.process_time(), time.perf_counter()
            out = fn()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        if label is not None:
            self.cpu[label] = statistics.median(cpus)
        return walls, cpus, out


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the shared machine was)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine(**extra: Any) -> dict[str, Any]:
    """The machine record of a result: Python, platform, CPU count, numpy, plus *extra*
    (library versions the benchmark compares against, thread counts)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        **extra,
    }


def itk_record() -> dict[str, Any]:
    """SimpleITK's version and its thread-pool size (for :func:`machine` of benchmarks that
    compare against SimpleITK; its filters may run on several threads)."""
    import SimpleITK as sitk

    return {
        "simpleitk": sitk.Version.VersionString(),
        "itk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
    }


def save_result(path: Path, result: dict[str, Any]) -> Path:
    """Write *result* as indented JSON (its folder created), returning *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
