"""Atomic file writes: a temp file in the target folder, then ``os.replace`` (never half a file)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from densescale.data.trec import atomic_write_text, atomic_writer

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "save_figure"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_writer(path, binary=True) as f:
        f.write(data)
    return Path(path)


def _strict(x):
    """JSON has no Infinity or NaN: a non-finite float (an unreachable CE, say) becomes null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x


def atomic_write_json(path: str | os.PathLike, payload) -> Path:
    """Write ``payload`` as strict JSON (non-finite floats as null), indented, atomically."""
    return atomic_write_text(path, json.dumps(_strict(payload), indent=2, allow_nan=False) + "\n")


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Render a ``matplotlib.figure.Figure`` to PNG bytes (Agg canvas) and write them atomically.

    No ``bbox_inches="tight"``: it renders every figure twice; the figures set their margins.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())
