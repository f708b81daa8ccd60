"""Access to the compiled CPU kernels (``densescale._C``), loaded lazily.

The package imports without the extension (for example from a source tree that was never built);
only the ``"cpp"`` backends need it, and they raise a clear error naming the missing piece.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

# DENSESCALE_ISA caps the SIMD path of the C++ kernels (read once per process, csrc/cpu_features.cpp).
ISA_CAPS = ("generic", "avx2", "avx512")


def _check_isa_cap() -> None:
    """A misspelt cap would leave the process uncapped (the kernels take any other value as
    avx512): refuse it before the kernels load."""
    cap = os.environ.get("DENSESCALE_ISA", "")
    if cap and cap.lower() not in ISA_CAPS:
        raise ValueError(
            f"DENSESCALE_ISA must be one of {', '.join(ISA_CAPS)} (or unset), got {cap!r}"
        )


@functools.lru_cache(maxsize=1)
def _load() -> ModuleType | None:
    _check_isa_cap()
    try:
        from densescale import _C
    except ImportError:
        return None
    return _C


def has_native() -> bool:
    """True when the compiled CPU kernels are importable."""
    return _load() is not None


def native() -> ModuleType:
    """The ``densescale._C`` module, or an ImportError that says how to build it."""
    mod = _load()
    if mod is None:
        raise ImportError(
            "densescale._C (the C++ CPU kernels) is not built; install the package with "
            "`pip install .` or run `make dev` in a source checkout, or use backend='torch'"
        )
    return mod
