"""What the model cache holds (`localllm list`) and removing from it (`localllm rm`).

A cached model is a catalogue file at the top of the cache, a Hugging Face
file under `hf/OWNER/REPO/`, or any other `.gguf` file someone put there.
Hidden entries (`.pull-*` scratch directories, huggingface_hub's staging
folder, lock files) are never models. Listing reads each file's header only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hf_hub, hub
from .errors import LocalLLMError, ModelNotFound, UsageError
from .progress import human_bytes


@dataclass(frozen=True)
class CachedModel:
    name: str  # what `rm` and every MODEL argument accept
    path: Path
    size: int
    architecture: str | None = None
    quant: str | None = None
    error: str | None = None  # why the header could not be read

    def as_json(self) -> dict[str, Any]:
        out = {"name": self.name, "path": str(self.path), "size_bytes": self.size,
               "architecture": self.architecture, "quant": self.quant}
        if self.error:
            out["error"] = self.error
        return out


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _name_for(root: Path, path: Path) -> str:
    rel = path.relative_to(root)
    if rel.parts[0] == hf_hub.HF_DIR and len(rel.parts) >= 4:
        return f"{hub.HF_SCHEME}{'/'.join(rel.parts[1:])}"
    if len(rel.parts) == 1:
        for name, entry in hub.CATALOG.items():
            if entry.filename == rel.name:
                return name
    return str(path)


def _model_files(root: Path) -> list[Path]:
    files = []
    hf = root / hf_hub.HF_DIR
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if _hidden(rel) or not p.is_file():
            continue
        # any file under hf/ passed the GGUF check on its way in, whatever its name
        if p.suffix.lower() == ".gguf" or hf in p.parents:
            files.append(p)
    return sorted(files)


def dominant_quant(g) -> str | None:
    """The file's weight type: llama.cpp's `general.file_type` name, else the type holding the most bytes."""
    import gguf

    ftype = g.metadata.get("general.file_type")
    if isinstance(ftype, int) and not isinstance(ftype, bool):
        try:
            name = gguf.LlamaFileType(ftype).name
        except ValueError:
            name = None
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    mix = g.quant_mix()  # largest first
    weights = [k for k in mix if k != "F32"] or list(mix)  # F32 is norms and biases, unless all of it is
    return weights[0] if weights else None


def describe(root: Path, path: Path) -> CachedModel:
    from .gguf import open_gguf

    name = _name_for(root, path)
    size = path.stat().st_size
    try:
        g = open_gguf(path)
        return CachedModel(name, path, size, g.metadata.get("general.architecture"), dominant_quant(g))
    except LocalLLMError as e:
        return CachedModel(name, path, size, error=str(e))


def cached_models() -> list[CachedModel]:
    root = hub.models_dir()
    if not root.is_dir():
        return []
    return [describe(root, p) for p in _model_files(root)]


def format_table(models: list[CachedModel]) -> str:
    rows = [("NAME", "SIZE", "ARCH", "QUANT", "PATH")]
    for m in models:
        rows.append((m.name, human_bytes(m.size), m.architecture or "?", m.quant or "?", str(m.path)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def _inside(root: Path, path: Path) -> bool:
    """Whether path (not following a final symlink) lies in root."""
    parent = path.parent.resolve()
    real_root = root.resolve()
    return parent == real_root or real_root in parent.parents


def _cached_names() -> str:
    names = [m.name for m in cached_models()]
    return ", ".join(names) if names else "none"


def locate(name: str) -> Path:
    """The cached file NAME (short name, hf:// spec or path) refers to; never touches the network."""
    root = hub.models_dir()
    if name in hub.CATALOG:
        path = hub.cached_path(name)
        if not (path.is_file() or path.is_symlink()):
            raise ModelNotFound(f"{name} is not in the model cache ({root})")
        return path
    if hub.is_hf_spec(name):
        spec = hf_hub.parse_spec(name)
        if spec.file:
            path = hf_hub.local_path(spec)
            if not path.is_file():
                raise ModelNotFound(f"{name} is not in the model cache; cached: {_cached_names()}")
            return path
        return hf_hub.local_path(spec.with_file(hf_hub.choose_file(spec, hf_hub.cached_files(spec), "in the cache")))
    path = Path(os.path.abspath(Path(name).expanduser()))
    if not (path.exists() or path.is_symlink()):
        raise ModelNotFound(f"no cached model {name!r}; cached: {_cached_names()}")
    if not _inside(root, path):
        raise UsageError(f"refusing to remove {path}: it is outside the model cache ({root})")
    if path.is_dir() or _hidden(Path(path.parent.resolve(), path.name).relative_to(root.resolve())):
        raise UsageError(f"refusing to remove {path}: not a cached model file")
    return path


def _prune_empty_dirs(start: Path, stop: Path) -> None:
    """Remove empty directories from start up to (not including) stop."""
    d = start
    while d != stop and stop in d.parents:
        try:
            d.rmdir()
        except OSError:  # not empty, or already gone
            return
        d = d.parent


def remove(name: str) -> Path:
    """Delete a cached model; returns the path it had. A symlink is removed, not its target."""
    path = locate(name)
    path.unlink()
    root = Path(os.path.abspath(hub.models_dir()))
    _prune_empty_dirs(Path(os.path.abspath(path.parent)), root / hf_hub.HF_DIR)
    return path
