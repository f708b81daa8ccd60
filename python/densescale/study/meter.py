"""Wall time, peak resident memory and bytes written, per step of a long run.

:class:`StepMeter` samples the process's resident set size (RSS, via psutil) every
``interval`` seconds on a daemon thread, so a step's peak is the largest sample inside it (a
spike shorter than the interval can be missed). RSS counts the pages of memory-mapped files the
process has touched, which the kernel can drop and reread; the anonymous part (RSS minus
psutil's ``shared``: Linux's RssFile + RssShmem) is what must fit in RAM, and is sampled beside
it. Bytes on disk are the growth of the watched folders' total file size across the step.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class StepRow:
    """One measured step: ``seconds`` of wall time, ``peak_rss`` (bytes, the whole process),
    ``rss_growth`` (bytes: peak minus the RSS before the rehearsal's first step, the memory the
    data of the run holds), ``disk_bytes`` written under the watched folders, a ``note``, and
    ``peak_anon`` (bytes: the step's peak of RSS not backed by files; 0 in rows written before it
    was measured)."""

    name: str
    seconds: float
    peak_rss: int
    rss_growth: int
    disk_bytes: int
    note: str = ""
    peak_anon: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def folder_bytes(paths) -> int:
    """Total size in bytes of the files under ``paths`` (missing ones count 0)."""
    total = 0
    for p in paths:
        p = Path(p)
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            for root, _, files in os.walk(p):
                for f in files:
                    try:
                        total += os.stat(os.path.join(root, f)).st_size
                    except FileNotFoundError:  # a temp file renamed meanwhile
                        pass
    return total


class StepMeter:
    """Measure named steps: ``with meter.step("name"): ...`` appends a :class:`StepRow` (and
    passes it to ``on_row``)."""

    def __init__(self, watch=(), *, interval: float = 0.05, on_row=None) -> None:
        import psutil

        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self._proc = psutil.Process()
        self.watch = [Path(w) for w in watch]
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (time, rss, anonymous rss)
        self.rows: list[StepRow] = []
        self.on_row = on_row  # called with each new row (e.g. to save what was measured so far)
        self.baseline = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _now(self) -> tuple[float, int, int]:
        m = self._proc.memory_info()
        return time.perf_counter(), m.rss, m.rss - getattr(m, "shared", 0)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._now())
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, t0: float, t1: float, anonymous: bool = False) -> int:
        """Largest RSS (or anonymous RSS) sampled in [t0, t1] (the current one when no sample
        fell inside)."""
        at = 2 if anonymous else 1
        inside = [s[at] for s in self.samples if t0 <= s[0] <= t1]
        return max(inside) if inside else self._now()[at]

    def add(self, name: str, t0: float, t1: float, disk: int = 0, note: str = "") -> StepRow:
        peak = self.peak(t0, t1)
        row = StepRow(name, t1 - t0, peak, max(0, peak - self.baseline), disk, note)
        row.peak_anon = self.peak(t0, t1, anonymous=True)
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)
        return row

    @contextmanager
    def step(self, name: str, note: str = ""):
        """Time the block, take its RSS peak and the bytes it wrote; yields a dict whose
        ``"note"`` the block may set."""
        info = {"note": note}
        before = folder_bytes(self.watch)
        t0 = time.perf_counter()
        yield info
        t1 = time.perf_counter()
        self.samples.append((t1, *self._now()[1:]))
        self.add(name, t0, t1, folder_bytes(self.watch) - before, info["note"])
