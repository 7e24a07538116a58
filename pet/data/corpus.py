"""Validation of parallel text files before any processing.

Why up front: a missing line on one side shifts every later pair, and the
model silently learns from misaligned data; a stray Latin-1 byte makes the
tokenizer crash an hour into a job. Each check here fails at once with a
:class:`~pet.errors.DataError` that names the file, the line and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pet.data.fileio import split_lines
from pet.errors import DataError

PathLike = str | os.PathLike[str]

_BOM = "\ufeff"


def decode_utf8(data: bytes, where: str) -> str:
    """``data`` as text, without a leading byte-order mark (editors add it and
    it is never content); DataError naming the line and column of a byte that
    is not UTF-8 (``where`` names the file)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        line_start = data.rfind(b"\n", 0, err.start) + 1
        col = err.start - line_start + 1
        raise DataError(
            f"{where}:{lineno}: byte {data[err.start:err.start + 1]!r} at column {col} is not valid UTF-8; "
            f"re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or fix that line"
        ) from None
    return text[1:] if text.startswith(_BOM) else text


def read_text_file(path: PathLike) -> list[str]:
    """Lines of a UTF-8 text file; DataError if missing, empty or not UTF-8.

    Lines are split on ``\\n`` only (see :mod:`pet.data.fileio`).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist; check data.source and the file name")
    if not path.is_file():
        raise DataError(f"{path}: is not a regular file; point data.source at a folder of text files")
    lines = split_lines(decode_utf8(path.read_bytes(), str(path)))
    if not lines or all(not line.strip() for line in lines):
        raise DataError(f"{path}: file is empty; it must hold one sentence per line")
    return lines


@dataclass
class ParallelFiles:
    """The two validated sides of one split."""

    src_path: Path
    tgt_path: Path
    src: list[str]
    tgt: list[str]

    def __len__(self) -> int:
        return len(self.src)


def check_parallel(src_path: PathLike, tgt_path: PathLike) -> ParallelFiles:
    """Read and validate a pair of line-aligned files.

    Raises DataError for: a missing or empty file, invalid UTF-8 (file, line
    and column), different line counts (both files and both counts), or a line
    that is blank on either side (file and line: an empty sentence has no
    translation and would be dropped on one side only by later tools).
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src = read_text_file(src_path)
    tgt = read_text_file(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
            "parallel files must be line-aligned (one sentence pair per line number)"
        )
    for lineno, (s, t) in enumerate(zip(src, tgt), start=1):
        s_empty, t_empty = not s.strip(), not t.strip()
        if s_empty and t_empty:
            raise DataError(
                f"{src_path}:{lineno} and {tgt_path}:{lineno}: empty lines; delete line {lineno} from both files"
            )
        if s_empty or t_empty:
            empty, other = (src_path, tgt_path) if s_empty else (tgt_path, src_path)
            raise DataError(
                f"{empty}:{lineno}: empty line, but {other}:{lineno} is not; "
                f"fill it in or delete line {lineno} from both files"
            )
    return ParallelFiles(src_path, tgt_path, src, tgt)


def split_paths(folder: PathLike, split: str, src_lang: str, tgt_lang: str) -> tuple[Path, Path]:
    """``folder/{split}.{src_lang}``, ``folder/{split}.{tgt_lang}``."""
    folder = Path(folder)
    return folder / f"{split}.{src_lang}", folder / f"{split}.{tgt_lang}"


def check_folder(folder: PathLike, src_lang: str, tgt_lang: str, splits: tuple[str, ...] = ("train", "valid", "test")) -> dict[str, ParallelFiles]:
    """Validate ``{split}.{lang}`` files for every split in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"{folder}: not a folder; data.source must be a folder holding "
            f"{{train,valid,test}}.{{{src_lang},{tgt_lang}}}"
        )
    return {split: check_parallel(*split_paths(folder, split, src_lang, tgt_lang)) for split in splits}
