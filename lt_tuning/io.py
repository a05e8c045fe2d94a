"""Atomic file writes: a killed process never leaves a truncated file behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file whose contents replace ``path`` only once the ``with`` block completes.

    It is a temporary file beside ``path`` (the same file system, so the final rename is
    atomic), flushed to disk and renamed into place; on any error it is removed, and ``path``
    keeps its old contents. A kill leaves at most a stray ``.<name>.*.tmp`` that nothing reads.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp makes the file private; give it normal permissions
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as out:
        out.write(text.encode("utf-8"))
    return Path(path)


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def __getattr__(name: str) -> Any:
    """``AtomicCheckpointIO`` (:mod:`lt_tuning.checkpoint_io`) on first use: the atomic writes above need no torch."""
    if name == "AtomicCheckpointIO":
        from lt_tuning.checkpoint_io import AtomicCheckpointIO

        return AtomicCheckpointIO
    raise AttributeError(f"module 'lt_tuning.io' has no attribute {name!r}")
