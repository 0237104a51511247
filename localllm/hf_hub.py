"""Models from Hugging Face: `hf://OWNER/REPO[/FILE or :QUANT]`.

A spec names one `.gguf` file of a model repository: `/FILE` names it
directly, `:QUANT` (e.g. `:Q4_K_M`) picks the file whose name carries that
quant, and a bare repo picks its only `.gguf` file. Files are fetched with the
optional `huggingface_hub` package (its progress bar; an interrupted download
resumes) into a staging folder, checked to be GGUF, then renamed into
`models/hf/OWNER/REPO/FILE`: the cache only shows complete GGUF files.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from . import hub
from .errors import DownloadError, GGUFError, LocalLLMError, ModelNotFound, UsageError

HF_DIR = "hf"  # under the model cache
STAGING_DIR = ".incoming"  # under HF_DIR: huggingface_hub's partial downloads, kept so they can resume
INSTALL_HINT = "pip install 'localllm[hf]'"
GGUF_MAGIC = b"GGUF"
MAX_LISTED = 20  # candidates named in an error before "... and N more"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_QUANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SPLIT_PART = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
EXAMPLE = "hf://OWNER/REPO, hf://OWNER/REPO:Q4_K_M or hf://OWNER/REPO/FILE.gguf"


@dataclass(frozen=True)
class HFSpec:
    owner: str
    repo: str
    file: str | None = None  # a path inside the repository, '/'-separated
    quant: str | None = None

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.repo}"

    def with_file(self, file: str) -> HFSpec:
        return HFSpec(self.owner, self.repo, file)

    def __str__(self) -> str:
        tail = f"/{self.file}" if self.file else f":{self.quant}" if self.quant else ""
        return f"{hub.HF_SCHEME}{self.repo_id}{tail}"


def parse_spec(text: str) -> HFSpec:
    """`hf://OWNER/REPO[/FILE or :QUANT]` -> HFSpec; UsageError with an example when malformed."""
    if not text.startswith(hub.HF_SCHEME):
        raise UsageError(f"not an hf:// model: {text!r} (expected {EXAMPLE})")
    parts = text[len(hub.HF_SCHEME):].split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise UsageError(f"{text!r} names no repository (expected {EXAMPLE})")
    owner, repo, file_parts = parts[0], parts[1], parts[2:]
    quant = None
    if ":" in repo:
        repo, quant = repo.split(":", 1)
        if not _QUANT.fullmatch(quant):
            raise UsageError(f"{text!r}: bad quant {quant!r} after ':' (e.g. :Q4_K_M)")
        if file_parts:
            raise UsageError(f"{text!r}: give either :QUANT or /FILE, not both")
    for name, what in ((owner, "owner"), (repo, "repository")):
        if not _NAME.fullmatch(name) or ".." in name:
            raise UsageError(f"{text!r}: bad {what} name {name!r}")
    file = None
    if file_parts:
        if any(p in ("", ".", "..") or "\\" in p for p in file_parts):
            raise UsageError(f"{text!r}: bad file path {'/'.join(file_parts)!r}")
        file = "/".join(file_parts)
    return HFSpec(owner, repo, file, quant)


def hf_root() -> Path:
    return hub.models_dir() / HF_DIR


def local_path(spec: HFSpec) -> Path:
    """Where the cache keeps the file a spec with a FILE names."""
    assert spec.file is not None
    return hf_root() / spec.owner / spec.repo / Path(*PurePosixPath(spec.file).parts)


def _staging_dir(spec: HFSpec) -> Path:
    return hf_root() / STAGING_DIR / spec.owner / spec.repo


def _is_split_part(name: str) -> bool:
    return bool(_SPLIT_PART.search(name))


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _quant_hits(names: list[str], quant: str) -> list[str]:
    """Files whose name contains the quant; when several do, those where it stands as a whole token.

    So `:Q4_K` still picks `x-Q4_K.gguf` next to `x-Q4_K_M.gguf`.
    """
    q = quant.lower()
    hits = [n for n in names if q in PurePosixPath(n).name.lower()]
    if len(hits) > 1:
        token = re.compile(rf"(?<![a-z0-9_]){re.escape(q)}(?![a-z0-9_])")
        exact = [n for n in hits if token.search(PurePosixPath(n).name.lower())]
        if exact:
            return exact
    return hits


def choose_file(spec: HFSpec, names: Iterable[str], where: str) -> str:
    """The one `.gguf` file among `names` that `spec` (with :QUANT or no file) selects."""
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    if not ggufs:
        raise ModelNotFound(f"{spec.repo_id} has no .gguf files {where}")
    if spec.quant:
        hits = _quant_hits(ggufs, spec.quant)
        if not hits:
            raise ModelNotFound(f"no .gguf file of {spec.repo_id} {where} matches {spec.quant!r}; "
                                f"its .gguf files: {_listing(ggufs)}")
    else:
        # vision projectors (mmproj-*.gguf) ride along in many repos; they are not the model
        hits = [n for n in ggufs if not PurePosixPath(n).name.lower().startswith("mmproj")] or ggufs
    if len(hits) > 1:
        how = f"{spec.quant!r} matches" if spec.quant else f"{spec.repo_id} has"
        raise UsageError(f"{how} several .gguf files {where}: {_listing(hits)}; "
                         f"name one as {hub.HF_SCHEME}{spec.repo_id}/FILE" + ("" if spec.quant else " or add :QUANT"))
    return hits[0]


def cached_files(spec: HFSpec) -> list[str]:
    """The files of spec's repository present in the cache, as repo paths."""
    base = hf_root() / spec.owner / spec.repo
    if not base.is_dir():
        return []
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())


def cached(model: str | HFSpec) -> Path | None:
    """The cached file an hf:// spec selects, without touching the network; None when not cached.

    For :QUANT or a bare repo the choice is made among the cached files: if
    they select exactly one, that is the answer; anything else (none, several)
    is left to a pull, which sees the whole repository.
    """
    spec = parse_spec(model) if isinstance(model, str) else model
    if spec.file:
        path = local_path(spec)
        return path if path.is_file() else None
    try:
        return local_path(spec.with_file(choose_file(spec, cached_files(spec), "in the cache")))
    except LocalLLMError:
        return None


def _import_hf():
    try:
        import huggingface_hub
        import huggingface_hub.utils  # a lazy package: its submodules are attributes only once imported
    except ImportError:
        raise DownloadError(f"hf:// models need the huggingface_hub package: {INSTALL_HINT}") from None
    return huggingface_hub


def _endpoint() -> str | None:
    # read at call time: huggingface_hub reads HF_ENDPOINT once, at its import
    return os.environ.get("HF_ENDPOINT") or None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextmanager
def _hf_errors(hfh, spec: HFSpec) -> Iterator[None]:
    """huggingface_hub's exceptions -> our one-line errors.

    Its errors come from several layers (HTTP client, hub API, file system)
    and their classes differ across versions, so at this boundary any
    Exception becomes a DownloadError; the known "not found" cases get a
    clearer message.
    """
    utils = hfh.utils
    try:
        yield
    except LocalLLMError:
        raise
    except utils.GatedRepoError:
        raise DownloadError(f"{spec.repo_id} is gated: accept its terms on the Hub and log in "
                            f"(hf auth login, or set HF_TOKEN)") from None
    except utils.RepositoryNotFoundError:
        raise ModelNotFound(f"no Hugging Face repository {spec.repo_id} (or it is private: "
                            f"log in, or set HF_TOKEN)") from None
    except utils.RevisionNotFoundError as e:
        raise ModelNotFound(f"{spec.repo_id}: {_first_line(e)}") from None
    except utils.EntryNotFoundError:
        raise ModelNotFound(f"{spec.repo_id} has no file {spec.file!r}") from None
    except Exception as e:
        raise DownloadError(f"could not fetch {spec}: {_first_line(e)}") from e


def remote_files(spec: HFSpec) -> list[str]:
    """Every file path in the repository (its `siblings`), from the Hub."""
    hfh = _import_hf()
    with _hf_errors(hfh, spec):
        info = hfh.HfApi(endpoint=_endpoint()).model_info(spec.repo_id)
    return [s.rfilename for s in (info.siblings or [])]


def _check_gguf(path: Path, spec: HFSpec) -> None:
    with open(path, "rb") as f:
        head = f.read(len(GGUF_MAGIC))
    if head != GGUF_MAGIC:
        raise GGUFError(f"{spec} is not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r})")


@contextmanager
def _progress_bars(hfh, show: bool) -> Iterator[None]:
    """huggingface_hub's own download bar: shown on a terminal unless quiet."""
    utils = hfh.utils
    was_disabled = utils.are_progress_bars_disabled()
    if not show and not was_disabled:
        utils.disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was_disabled:
            utils.enable_progress_bars()


def pull(model: str | HFSpec, force: bool = False, progress: hub.Progress | None = None,
         quiet: bool = False) -> Path:
    """Fetch the file an hf:// spec selects into the model cache; returns its path.

    An already-cached file is returned as is unless `force`. `progress` is
    unused: huggingface_hub draws its own download bar.
    """
    spec = parse_spec(model) if isinstance(model, str) else model
    hfh = _import_hf()
    if not spec.file:
        spec = spec.with_file(choose_file(spec, remote_files(spec), "on the Hub"))
    if _is_split_part(spec.file):
        raise UsageError(f"{spec} is one part of a split GGUF; split models are not supported yet")
    target = local_path(spec)
    if target.is_file() and not force:
        return target
    staging = _staging_dir(spec)
    staging.mkdir(parents=True, exist_ok=True)
    show = not quiet and getattr(sys.stderr, "isatty", lambda: False)()  # logs and pipes stay clean
    with _hf_errors(hfh, spec), _progress_bars(hfh, show):
        downloaded = Path(hfh.hf_hub_download(spec.repo_id, spec.file, local_dir=staging, endpoint=_endpoint(),
                                              force_download=force))
    try:
        _check_gguf(downloaded, spec)
    except GGUFError:
        downloaded.unlink(missing_ok=True)  # not resumable into anything useful
        raise
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(downloaded, target)  # atomic: the cache shows only whole, checked files
    hub._fsync_dir(target.parent)
    return target
