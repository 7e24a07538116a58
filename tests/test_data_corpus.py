"""Corpus validation: every defect is a DataError naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pet.data.corpus import check_folder, check_parallel, read_text_file
from pet.errors import DataError


def _write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_valid_pair_reads_lines(tmp_path: Path) -> None:
    src = _write(tmp_path / "a.de", "\ufeffeins\nzwei\u2028drei\n")  # BOM dropped, U+2028 is not a newline
    tgt = _write(tmp_path / "a.en", "one\ntwo three")  # no final newline
    pair = check_parallel(src, tgt)
    assert pair.src == ["eins", "zwei\u2028drei"] and pair.tgt == ["one", "two three"] and len(pair) == 2


def test_mismatched_line_counts_name_both_files(tmp_path: Path) -> None:
    src = _write(tmp_path / "train.de", "a\nb\nc\n")
    tgt = _write(tmp_path / "train.en", "a\nb\n")
    with pytest.raises(DataError) as err:
        check_parallel(src, tgt)
    msg = str(err.value)
    assert "train.de has 3 lines" in msg and "train.en has 2" in msg


def test_bad_utf8_names_file_and_line(tmp_path: Path) -> None:
    src = _write(tmp_path / "valid.de", b"gut\nauch gut\nschl\xe4cht\n")
    tgt = _write(tmp_path / "valid.en", "good\nalso good\nbad\n")
    with pytest.raises(DataError, match=r"valid\.de:3: byte .* column 5 is not valid UTF-8"):
        check_parallel(src, tgt)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = _write(tmp_path / "test.de", "")
    with pytest.raises(DataError, match=r"test\.de: file is empty"):
        read_text_file(empty)
    blank = _write(tmp_path / "blank.de", "\n \n")
    with pytest.raises(DataError, match="is empty"):
        read_text_file(blank)
    with pytest.raises(DataError, match=r"nope\.de: file does not exist"):
        read_text_file(tmp_path / "nope.de")


def test_empty_line_on_one_side_names_file_and_line(tmp_path: Path) -> None:
    src = _write(tmp_path / "t.de", "a\nb\nc\n")
    tgt = _write(tmp_path / "t.en", "a\n  \nc\n")
    with pytest.raises(DataError, match=r"t\.en:2: empty line, but .*t\.de:2 is not"):
        check_parallel(src, tgt)
    both = _write(tmp_path / "u.en", "a\nb\n\n")
    src2 = _write(tmp_path / "u.de", "a\nb\n\n")
    with pytest.raises(DataError, match=r"u\.de:3 and .*u\.en:3: empty lines"):
        check_parallel(src2, both)


def test_check_folder_reports_missing_split(tmp_path: Path) -> None:
    for split in ("train", "valid"):
        _write(tmp_path / f"{split}.de", "a\n")
        _write(tmp_path / f"{split}.en", "a\n")
    with pytest.raises(DataError, match=r"test\.de: file does not exist"):
        check_folder(tmp_path, "de", "en")
    with pytest.raises(DataError, match="not a folder"):
        check_folder(tmp_path / "nothing", "de", "en")
