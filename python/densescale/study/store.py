"""The results store: a JSONL file, one record per finished grid cell.

Every change rewrites the file through a temporary file and an atomic rename under an exclusive
lock, so a study killed at any moment leaves either the old or the new file, never half a line, and
concurrent cells (process pool, SLURM array) never lose each other's records. A record whose cell
config changed is not deleted: :meth:`ResultsStore.supersede` moves it to ``superseded.jsonl``
beside the store.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

SUPERSEDED = "superseded.jsonl"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _parse(path: Path, text: str) -> list[dict]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON record ({e.msg})") from None
    return out


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

    def _text(self) -> str:
        return self.path.read_text() if self.path.exists() else ""

    def records(self) -> list[dict]:
        return _parse(self.path, self._text())

    def keys(self) -> set[str]:
        return {r["key"] for r in self.records() if "key" in r}

    def append(self, record: dict) -> None:
        """Add one record (its ``key`` must be new; a duplicate key is ignored, first one wins)."""
        line = json.dumps(record, sort_keys=True)
        with self._locked():
            old = self._text()
            if record.get("key") in {
                json.loads(x).get("key") for x in old.splitlines() if x.strip()
            }:
                return
            if old and not old.endswith("\n"):
                old += "\n"
            _write_atomic(self.path, old + line + "\n")

    def supersede(self, keys) -> list[dict]:
        """Move the records of ``keys`` to ``superseded.jsonl`` (appended there first, then
        removed here, so a kill in between loses nothing) and return them."""
        keys = set(keys)
        with self._locked():
            records = self.records()
            gone = [r for r in records if r.get("key") in keys]
            if not gone:
                return []
            old = self.path.with_name(SUPERSEDED)
            prev = old.read_text() if old.exists() else ""
            if prev and not prev.endswith("\n"):
                prev += "\n"
            _write_atomic(old, prev + "".join(json.dumps(r, sort_keys=True) + "\n" for r in gone))
            kept = [r for r in records if r.get("key") not in keys]
            _write_atomic(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
            return gone
