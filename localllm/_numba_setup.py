"""Configure numba before any kernel module is imported.

Why: numba's default `workqueue` threading layer costs ~100 µs per parallel
launch, which is more than a whole decode step can afford; the OpenMP layer
costs ~2 µs. The compiled-kernel cache must also live somewhere writable for
installed packages, so we point it at the user cache unless told otherwise.
"""

import hashlib
import os
import shutil
from pathlib import Path


# Files whose code numba compiles, or that decide what it compiles. Edits elsewhere
# (CLI, API, tokenizer) leave the compiled kernels valid.
KERNEL_SOURCES = ("kernels", "quant", "models/forward_pass.py", "isa.py", "_numba_setup.py")


def _source_tag(root: Path = Path(__file__).resolve().parent) -> str:
    """A hash of the kernel sources (`KERNEL_SOURCES`).

    numba checks only a kernel's own file when it loads it from the cache, but a
    kernel that calls another (the compiled decode step calls every matvec kernel)
    carries the callee's code in its cache entry. An edit to the callee alone would
    leave the old code running. Keying the cache directory by all kernel sources
    avoids it.
    """
    digest = hashlib.sha1()
    for entry in KERNEL_SOURCES:
        target = root / entry
        paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for path in paths:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _cache_dir() -> Path:
    from .isa import KERNEL_PATH

    home = os.environ.get("LOCALLLM_HOME")
    base = (Path(home) if home else Path.home() / ".cache" / "localllm") / "numba"
    # the kernel path is part of the key: the compiled decode step embeds one path's kernels
    tag = f"{_source_tag()}-{KERNEL_PATH}"
    if base.is_dir() and not (base / tag).exists():
        src = tag.split("-")[0]
        for old in base.iterdir():  # compiled from other sources: stale now
            if old.is_dir() and not old.name.startswith(src):
                shutil.rmtree(old, ignore_errors=True)
    return base / tag


def _omp_available() -> bool:
    # numba's OpenMP pool needs libgomp (shipped with gcc on Linux); without it numba
    # would refuse to start any parallel kernel when the layer is forced to omp
    try:
        import numba.np.ufunc.omppool  # noqa: F401
    except ImportError:
        return False
    return True


# Only without a cache given: _cache_dir() also clears the caches of other sources, and a
# child of a process running older sources would delete its parent's cache and lock file.
if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(_cache_dir())
# OpenMP workers spin after each parallel region (libgomp's default is long). Prompt
# processing alternates our kernels with OpenBLAS's own threads, and on 2 cores the
# spinning workers starved them: pp512 ran at 312 t/s with 2 threads and 406 with 1.
# A short spin keeps decode's back-to-back kernels fast (measured: tg unchanged) and
# gives prefill its cores back (407 t/s). libgomp reads this when numba first loads it.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
if "NUMBA_THREADING_LAYER" not in os.environ:
    if _omp_available():
        os.environ["NUMBA_THREADING_LAYER"] = "omp"
    else:
        import warnings

        warnings.warn("numba's OpenMP threading layer is unavailable (is libgomp installed?); falling back "
                      "to numba's default layer, whose ~100 us thread launches make decoding much slower",
                      RuntimeWarning, stacklevel=2)

import numba  # noqa: E402  (must come after the environment is set)

# numba reads its environment once, at import: if a caller imported numba before us,
# set the same values on its config (kernels are decorated after this point).
if not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
if os.environ.get("NUMBA_THREADING_LAYER") and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"]


def threading_layer() -> str:
    """The layer numba actually started ('omp', 'tbb' or 'workqueue'), or 'not started'."""
    try:
        return numba.threading_layer()
    except ValueError:
        return "not started"
