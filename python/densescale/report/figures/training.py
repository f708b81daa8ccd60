"""Training curves (``training_curves.png``): training loss and dev CE of a study's cells
against step, read from each cell's ``metrics.jsonl``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .._io import save_figure
from . import _style as style


def _metrics_files(cells) -> list[Path]:
    if isinstance(cells, (str, os.PathLike)):
        root = Path(cells)
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise ValueError(f"cells must be a study folder or cell folders, got {str(root)!r}")
        direct = root / "metrics.jsonl"
        if direct.exists():
            return [direct]
        return sorted(root.rglob("metrics.jsonl"))
    if not isinstance(cells, Sequence):
        raise TypeError(
            f"cells must be a folder or a list of cell folders, got {type(cells).__name__}"
        )
    out = []
    for c in cells:
        p = Path(c)
        p = p if p.name == "metrics.jsonl" else p / "metrics.jsonl"
        if not p.exists():
            raise ValueError(f"cells: {str(p)!r} does not exist")
        out.append(p)
    return out


def read_training_log(path: str | os.PathLike) -> list[dict]:
    """The lines of a ``metrics.jsonl`` (one JSON object each: step, loss, dev_ce, lr,
    tokens_per_s, elapsed); blank and half-written last lines are skipped, a bad line elsewhere
    raises ValueError naming the file and line."""
    path = Path(path)
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):  # the trainer may be writing it right now
                break
            raise ValueError(f"{path}:{i}: not a JSON object ({exc})") from exc
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{path}:{i}: expected an object with a 'step' key, got {line!r}")
        rows.append(row)
    return rows


def plot_training_curves(cells, path: str | os.PathLike) -> Path:
    """Training curves of a study's cells: train loss (left) and dev CE (right) against step.

    Args:
        cells: a study folder (every ``metrics.jsonl`` below it, e.g. ``cells/*/metrics.jsonl``),
            one cell folder, or a list of cell folders (or ``metrics.jsonl`` paths).
        path: the PNG to write (atomically).

    Raises:
        ValueError: no ``metrics.jsonl`` found, or a malformed line (file and line named).
    """
    files = _metrics_files(cells)
    if not files:
        raise ValueError(f"cells: no metrics.jsonl found under {str(cells)!r}")
    logs = [(f.parent.name, read_training_log(f)) for f in files]
    logs = [(n, rows) for n, rows in logs if rows]
    if not logs:
        raise ValueError("cells: every metrics.jsonl is empty")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.9, wspace=0.2)
    ax_loss, ax_dev = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    any_dev = False
    for color, (name, rows) in zip(style.colors(len(logs)), logs):
        train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
        dev = [(r["step"], r["dev_ce"]) for r in rows if r.get("dev_ce") is not None]
        if train:
            ax_loss.plot(*zip(*train), "-", color=color, linewidth=1.0, label=name)
        if dev:
            any_dev = True
            ax_dev.plot(*zip(*dev), "o-", color=color, markersize=3, linewidth=1.0, label=name)
    for ax, what in ((ax_loss, "training loss (nats)"), (ax_dev, "dev CE (nats)")):
        ax.set_xlabel("step")
        ax.set_ylabel(what)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    ax_loss.set_title("Training loss per cell", fontsize=10)
    ax_dev.set_title(
        "Dev contrastive entropy per cell" + ("" if any_dev else " (none logged)"), fontsize=10
    )
    if len(logs) <= 16:
        ax_loss.legend(fontsize=6, loc="best")
    return save_figure(fig, path)
