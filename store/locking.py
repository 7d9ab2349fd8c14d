"""The store file's writer lock: one writer at a time holds an exclusive advisory lock
(``flock``) on it (``store.jsonl.StoreWriter``); readers take none."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from store.errors import Busy


def _locked_message(path: Path) -> str:
    return (f"{path} is being written by another process (an `n2g build`, or a build through "
            "n2g-mcp); wait for it to finish, or write to another store file")


def lock(fd: int, path: Path, wait: float) -> None:
    """Take an exclusive advisory lock on ``fd``, waiting up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Busy(_locked_message(path)) from None
            time.sleep(0.2)


def check_not_locked(path: str | os.PathLike[str]) -> None:
    """Raise :class:`Busy` if a writer holds ``path`` now.

    A quick check before slow work (loading a model); the writer still takes the lock for real.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        lock(fd, path, 0.0)
    finally:
        os.close(fd)  # closing releases the lock
