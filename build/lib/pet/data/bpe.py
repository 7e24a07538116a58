"""Joint byte-pair encoding with subword-nmt, byte-compatible with its CLI.

fairseq's recipe calls ``learn_bpe.py -s MERGES < train.src+train.tgt`` and
``apply_bpe.py -c code < f > out``. We call the same library functions, and
read/write files the way the CLI does (UTF-8, lines split on ``\\n`` only, each
line passed with its newline to ``BPE.process_line``), so that applying the
shared IWSLT'14 ``code`` to the tokenized text reproduces fairseq's BPE files
byte for byte (tested in ``tests/test_data_bpe.py``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import subword_nmt.learn_bpe as _learn
from subword_nmt.apply_bpe import BPE

from pet.data.fileio import atomic_open
from pet.errors import DataError

PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)


def _lines(paths: Sequence[PathLike]) -> Iterator[str]:
    for p in paths:
        with open(p, encoding="utf-8", newline="\n") as f:
            yield from f


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """learn_bpe draws a tqdm bar and prints notes on stderr; route them to logging.

    (Batch jobs' logs do not want a progress bar; the note "no pair has
    frequency >= 2. Stopping" - fewer merges learned than asked - is kept.)
    """
    if enabled:
        yield
        return
    original = _learn.tqdm
    _learn.tqdm = lambda iterable, *a, **k: iterable  # type: ignore[assignment]
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield
    finally:
        _learn.tqdm = original  # type: ignore[assignment]
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.info("subword-nmt: %s", line.strip())


def learn_joint_bpe(
    paths: Sequence[PathLike],
    codes_path: PathLike,
    merges: int,
    *,
    min_frequency: int = 2,
    progress: bool = False,
) -> Path:
    """Learn ``merges`` merge operations on the concatenation of ``paths``.

    Same as ``cat paths | subword-nmt learn-bpe -s merges > codes_path``
    (subword-nmt's default ``min_frequency=2``). The codes file is written to
    a temporary name and renamed, so a crash never leaves a truncated table.
    """
    codes_path = Path(codes_path)
    if merges < 1:
        raise DataError(f"bpe_merges={merges}: joint BPE needs at least one merge; set data.bpe_merges >= 1")
    with atomic_open(codes_path) as out, _quiet(progress):
        _learn.learn_bpe(_lines(paths), out, merges, min_frequency=min_frequency)
    return codes_path


def load_bpe(codes_path: PathLike) -> BPE:
    """A subword-nmt ``BPE`` segmenter (``@@`` separator) for ``codes_path``."""
    codes_path = Path(codes_path)
    if not codes_path.is_file():
        raise DataError(f"BPE codes {codes_path} do not exist; learn them first (pet stage=prepare)")
    with open(codes_path, encoding="utf-8", newline="\n") as f:
        return BPE(f)


def apply_bpe_lines(bpe: BPE, lines: Iterable[str]) -> Iterator[str]:
    """Segment lines (each with or without its trailing newline) as apply_bpe.py does."""
    for line in lines:
        yield bpe.process_line(line)


def apply_bpe(codes_path: PathLike | BPE, in_path: PathLike, out_path: PathLike) -> Path:
    """``subword-nmt apply-bpe -c codes_path < in_path > out_path``, written atomically."""
    bpe = codes_path if isinstance(codes_path, BPE) else load_bpe(codes_path)
    out_path = Path(out_path)
    with open(in_path, encoding="utf-8", newline="\n") as fin, atomic_open(out_path) as fout:
        for seg in apply_bpe_lines(bpe, fin):
            fout.write(seg)
    return out_path
