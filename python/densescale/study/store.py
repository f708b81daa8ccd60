"""The results store: an append-only JSONL file, one record per finished grid cell.

Every append rewrites the file through a temporary file and an atomic rename under an exclusive
lock, so a study killed at any moment leaves either the old or the new file, never half a line, and
concurrent cells (process pool, SLURM array) never lose each other's records.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path


class ResultsStore:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for lineno, line in enumerate(self.path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.path}:{lineno}: not a JSON record ({e.msg})") from None
        return out

    def keys(self) -> set[str]:
        return {r["key"] for r in self.records() if "key" in r}

    def append(self, record: dict) -> None:
        """Add one record (its ``key`` must be new; a duplicate key is ignored, first one wins)."""
        line = json.dumps(record, sort_keys=True)
        with self._locked():
            old = self.path.read_text() if self.path.exists() else ""
            if record.get("key") in {
                json.loads(x).get("key") for x in old.splitlines() if x.strip()
            }:
                return
            if old and not old.endswith("\n"):
                old += "\n"
            tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
            with open(tmp, "w") as f:
                f.write(old + line + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
