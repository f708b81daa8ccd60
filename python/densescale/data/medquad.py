"""MedQuAD in BEIR format (consumer-health questions, split by topic), read with ``load_beir``.

The project does not ship it; it is found at ``$DENSESCALE_MEDQUAD`` or beside the checkout at
``../shared/data/medquad`` (see that folder's README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from .collection import Collection, load_beir

_REPO_ROOT = Path(__file__).resolve().parents[3]


def default_path() -> Path:
    """``$DENSESCALE_MEDQUAD`` when set, else ``<checkout>/../shared/data/medquad``."""
    env = os.environ.get("DENSESCALE_MEDQUAD")
    return Path(env) if env else _REPO_ROOT.parent / "shared" / "data" / "medquad"


def load_medquad(path: str | os.PathLike | None = None, **kwargs) -> Collection:
    """``load_beir`` on MedQuAD (splits train / dev / test); ``kwargs`` go to ``load_beir``."""
    root = Path(path) if path is not None else default_path()
    if not (root / "corpus.jsonl").is_file():
        raise FileNotFoundError(
            f"MedQuAD not found at {root}; pass path= or set DENSESCALE_MEDQUAD to its BEIR folder"
        )
    return load_beir(root, name="medquad", **kwargs)
