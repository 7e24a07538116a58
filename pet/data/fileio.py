"""Atomic file writes and newline-exact line reading.

Why atomic: a prepare job killed half-way (SLURM pre-emption, Ctrl-C) must
never leave a file that looks complete. Every output is written under a
temporary name in the same folder, flushed to disk, then renamed over the
final name with ``os.replace`` (atomic on POSIX).

Why "``\\n`` only": Python's ``str.splitlines`` and universal-newline mode
also break lines at ``\\r``, ``\\x85``, ``\\u2028`` ..., which Perl, sed and
subword-nmt do not. Splitting differently would silently misalign the two
sides of a parallel corpus.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Callable

PathLike = str | os.PathLike[str]


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: PathLike, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        if binary:
            f: IO[Any] = open(tmp, "wb")
        else:
            f = open(tmp, "w", encoding="utf-8", newline="\n")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_lines(path: PathLike, lines: Iterable[str]) -> None:
    """Write ``lines`` (without newlines) one per line, atomically."""
    with atomic_open(path) as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_with(path: PathLike, write: Callable[[Path], Any]) -> None:
    """``write(tmp_path)`` (torch.save, a figure's savefig ...), then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def split_lines(text: str) -> list[str]:
    """Split on ``\\n`` only; a final newline does not start an extra empty line."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: PathLike) -> list[str]:
    """UTF-8 lines of ``path`` (split on ``\\n`` only, newlines removed)."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return split_lines(f.read())
