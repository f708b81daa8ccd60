"""What a study folder's results depend on, so a rerun never mixes old and new (STYLE: Studies).

- ``study.json`` records the collection the folder was made from (its content fingerprint,
  :func:`densescale.study.prepare.collection_fingerprint`). A rerun on another collection, or in a
  folder an older densescale filled without that record, is refused before anything is read or
  written; ``--force`` moves the old results to ``previous/<time>/`` and starts over.
- Each record carries the hash of its cell config (:func:`densescale.study.cell.cell_config`).
  :func:`plan_cells` counts a cell done only when its stored record has the current hash; a record
  of another config is moved to ``superseded.jsonl`` and its cell recomputed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from densescale.data.trec import atomic_write_text
from densescale.study.cell import cell_config, changed_settings
from densescale.study.config import RESULTS, Cell, StudyConfig
from densescale.study.store import SUPERSEDED, ResultsStore

MANIFEST = "study.json"


class FolderConflict(ValueError):
    """The study folder holds results that depend on something else than this study."""


def _results_parts(study: StudyConfig) -> list[Path]:
    out = study.output
    parts = [out / n for n in (RESULTS, SUPERSEDED, "cells", "superseded", "splits", "report")]
    parts += sorted(out.glob("bm25.*.json")) + [out / "submitit"]
    if not study.tokenizer.get("path"):
        parts.append(out / "tokenizer")
    return [p for p in parts if p.exists()] + [out / MANIFEST]


def _move_aside(study: StudyConfig) -> Path:
    """Move every result of the folder to ``previous/<time>/`` (the record last, so a kill half
    way leaves a folder that is still refused)."""
    dest = study.output / "previous" / time.strftime("%Y%m%d-%H%M%S")
    while dest.exists():
        dest = dest.with_name(dest.name + "+")
    dest.mkdir(parents=True)
    for part in _results_parts(study):
        if part.exists():
            part.rename(dest / part.name)
    return dest


def recorded_fingerprint(study: StudyConfig) -> str | None:
    """The collection fingerprint :func:`check_folder` recorded in ``study.json`` (None when the
    folder has none yet)."""
    manifest = study.output / MANIFEST
    return json.loads(manifest.read_text()).get("fingerprint") if manifest.is_file() else None


def check_folder(
    study: StudyConfig, fingerprint: str, *, force: bool = False, progress: bool = True
) -> None:
    """Refuse (or with ``force`` move aside) results in ``study.output`` made from another
    collection; record this one's fingerprint in a new folder."""
    from densescale import __version__

    out = study.output
    manifest = out / MANIFEST
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        if old.get("fingerprint") == fingerprint:
            return
        what = (
            f"results made from another collection (fingerprint {old.get('fingerprint')}, "
            f"{old.get('collection')}; this study's is {fingerprint}, {study.collection})"
        )
    elif any(p.exists() for p in _results_parts(study)[:-1]):
        what = "results of a densescale that did not record which collection they came from"
    else:
        what = None
    if what is not None:
        if not force:
            raise FolderConflict(
                f"the study folder {out} holds {what}; they would mix with this study's. "
                "Give another folder (--out), or --force to move the old results to "
                f"{out / 'previous'}/<time>/ and start over"
            )
        dest = _move_aside(study)
        if progress:
            print(f"--force: the old results of {out} moved to {dest}", flush=True)
    record = {
        "fingerprint": fingerprint,
        "collection": study.collection,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "densescale": __version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(manifest, json.dumps(record, indent=2, default=str) + "\n")


def _config_of(study: StudyConfig, record: dict, fingerprint: str):
    """The config (and hash) this study gives the cell of a stored record (None when none)."""
    try:
        cell = Cell(
            record["model"], record["D"], record["source"], record["seed"], record.get("d", 768)
        )
        return cell_config(study, cell, fingerprint)
    except (KeyError, TypeError, ValueError):
        return None, None


def plan_cells(study: StudyConfig, cells: list[Cell], fingerprint: str) -> dict:
    """Split ``cells`` into done ones and ones to run, and supersede every stored record whose
    config is not this study's (grid cells and records outside the grid alike).

    Returns ``{"done": [Cell], "todo": [Cell], "changed": {key: [setting, ...]}, "hashes":
    {key: config hash}}``."""
    store = ResultsStore(study.paths()["results"])
    stored = {r["key"]: r for r in store.records() if "key" in r}
    done, todo, changed, hashes = [], [], {}, {}
    for cell in cells:
        config, hashes[cell.key] = cell_config(study, cell, fingerprint)
        rec = stored.pop(cell.key, None)
        if rec is not None and rec.get("config_hash") == hashes[cell.key]:
            done.append(cell)
            continue
        todo.append(cell)
        if rec is not None:
            changed[cell.key] = changed_settings(rec.get("config"), config)
    for key, rec in stored.items():  # outside the grid: kept only when still consistent
        config, digest = _config_of(study, rec, fingerprint)
        if digest is None or digest != rec.get("config_hash"):
            changed[key] = changed_settings(rec.get("config"), config or {})
    store.supersede(changed)
    return {"done": done, "todo": todo, "changed": changed, "hashes": hashes}


def count_done(study: StudyConfig, hashes: dict[str, str]) -> int:
    """How many cells of ``hashes`` ({key: config hash}) have a current record in the store."""
    records = ResultsStore(study.paths()["results"]).records()
    return sum(
        1 for r in records if r.get("key") in hashes and hashes[r["key"]] == r.get("config_hash")
    )
