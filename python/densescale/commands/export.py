"""``densescale export``: a run or study cells as sentence-transformers folders."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_export(args) -> int:
    from densescale.models.export import export_sentence_transformers
    from densescale.models.trained import load_cell, load_trained, select_cells

    src, out = Path(args.path), Path(args.out)
    try:
        if args.key or args.best_per_size:
            chosen = select_cells(src, key=args.key, best_per_size=args.best_per_size)
            # one folder per cell under --out for best-per-size, --out itself for one key
            targets = [(c, r, out / c.name if args.best_per_size else out) for c, r in chosen]
        else:
            targets = [(src, None, out)]
        for dest in {t[2] for t in targets}:  # refuse before any work
            if dest.is_dir() and any(dest.iterdir()) and not args.overwrite:
                raise ValueError(f"--out {dest} exists and is not empty; pass --overwrite")
        for cell, record, dest in targets:
            print(f"exporting {cell} ...", file=sys.stderr, flush=True)
            tm = load_cell(cell, record) if record is not None else load_trained(cell)
            export_sentence_transformers(tm, dest, overwrite=args.overwrite)
            ce = (tm.record or {}).get("ce")
            print(
                f"{dest}: {tm.name} N = {tm.N:,}, D = {tm.info.get('D')}, "
                + (f"CE {ce:.4f}, " if ce is not None else "")
                + ("scaled cosine" if tm.norm_scale else "dot product")
            )
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return 0


# ---------------------------------------------------------------- search
