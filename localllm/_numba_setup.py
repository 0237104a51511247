"""Configure numba before any kernel module is imported.

Why: numba's default `workqueue` threading layer costs ~100 µs per parallel
launch, which is more than a whole decode step can afford; the OpenMP layer
costs ~2 µs. The compiled-kernel cache must also live somewhere writable for
installed packages, so we point it at the user cache unless told otherwise.
"""

import os
from pathlib import Path


def _cache_dir() -> Path:
    home = os.environ.get("LOCALLLM_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "localllm"
    return base / "numba"


os.environ.setdefault("NUMBA_CACHE_DIR", str(_cache_dir()))
if "NUMBA_THREADING_LAYER" not in os.environ:
    os.environ["NUMBA_THREADING_LAYER"] = "omp"

import numba  # noqa: E402  (must come after the environment is set)


def threading_layer() -> str:
    """The layer numba actually started ('omp', 'tbb' or 'workqueue'), or 'not started'."""
    try:
        return numba.threading_layer()
    except ValueError:
        return "not started"
