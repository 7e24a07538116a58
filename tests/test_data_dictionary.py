"""Dictionary: fairseq's ordering, padding, file format and encoding."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from pet.data.dictionary import Dictionary, remove_bpe
from pet.errors import DataError


def _fairseq_order(counts: dict[str, int]) -> list[str]:
    """fairseq's finalize written the way fairseq writes it (sorted, then most_common)."""
    c = Counter(dict(sorted(counts.items())))
    return [sym for sym, _ in c.most_common()]


def test_specials_have_fairseq_ids() -> None:
    d = Dictionary()
    assert (d.bos, d.pad, d.eos, d.unk) == (0, 1, 2, 3)
    assert d.to_list() == ["<s>", "<pad>", "</s>", "<unk>"]
    assert d.index("never-seen") == d.unk


def test_finalize_orders_by_count_then_alphabet_and_pads() -> None:
    d = Dictionary()
    d.add_lines(["b a c a", "c b d", "zz a e"])  # a:3 b:2 c:2 d:1 e:1 zz:1
    d.finalize(threshold=0, padding_factor=8)
    assert d.symbols[4:10] == ["a", "b", "c", "d", "e", "zz"]
    assert d.symbols[10:] == ["madeupword0000", "madeupword0001", "madeupword0002", "madeupword0003", "madeupword0004", "madeupword0005"]
    assert len(d) == 16 and len(d) % 8 == 0
    assert d.count[d.index("a")] == 3 and d.count[d.index("madeupword0000")] == 0


def test_finalize_matches_counter_most_common_on_many_ties() -> None:
    import random

    rng = random.Random(3)
    words = [f"w{rng.randint(0, 300)}" for _ in range(5000)] + ["Zeta", "alpha", "Ärger", "été"]
    d = Dictionary()
    d.add_lines([" ".join(words[i : i + 17]) for i in range(0, len(words), 17)])
    counts = {s: c for s, c in zip(d.symbols[4:], d.count[4:])}
    d.finalize(padding_factor=1)
    assert d.symbols[4:] == _fairseq_order(counts)


def test_threshold_drops_rare_symbols() -> None:
    d = Dictionary()
    d.add_lines(["a a a b b c"])
    d.finalize(threshold=2, padding_factor=1)
    assert d.symbols[4:] == ["a", "b"]


def test_save_load_round_trip_in_fairseq_format(tmp_path: Path) -> None:
    d = Dictionary()
    d.add_lines(["hallo welt", "hallo du"])
    d.finalize(padding_factor=8)
    path = tmp_path / "dict.de.txt"
    d.save(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[:3] == ["hallo 2", "du 1", "welt 1"]  # no specials, count then alphabet
    assert lines[3] == "madeupword0000 0" and lines[-1] == ""
    loaded = Dictionary.load(path)
    assert loaded == d and loaded.count[4:] == d.count[4:]
    assert len(loaded) % 8 == 0


def test_list_round_trip() -> None:
    d = Dictionary()
    d.add_lines(["x y z x"])
    d.finalize()
    again = Dictionary.from_list(d.to_list())
    assert again == d and again.indices == d.indices
    with pytest.raises(DataError, match="must start with"):
        Dictionary.from_list(["a", "b", "c", "d"])


def test_encode_line_and_string() -> None:
    d = Dictionary()
    d.add_lines(["das ist gu@@ t ."])
    d.finalize(padding_factor=1)
    ids = d.encode_line("das ist  gu@@ t unbekannt .")
    assert ids.dtype == torch.long
    assert ids.tolist()[-1] == d.eos and d.unk in ids.tolist()
    assert d.encode_line("das", append_eos=False).tolist() == [d.index("das")]
    padded = torch.cat([ids, torch.tensor([d.pad, d.pad])])
    assert d.string(padded) == "das ist gu@@ t <unk> ."
    assert d.string(padded, bpe_symbol="@@ ") == "das ist gut <unk> ."
    assert d.string(padded, bpe_symbol="@@ ", escape_unk=True) == "das ist gut <<unk>> ."
    assert remove_bpe("a@@ b@@") == "ab"  # fairseq appends a space first, so a final "@@" goes too
    assert remove_bpe("a@@b") == "a@@b"


def test_load_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "dict.en.txt"
    bad.write_text("a 3\nnocount\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dict\.en\.txt:2"):
        Dictionary.load(bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("a 3\na 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dup\.txt:2: duplicate"):
        Dictionary.load(dup)
    with pytest.raises(DataError, match="does not exist"):
        Dictionary.load(tmp_path / "missing.txt")


def test_build_from_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x y\ny\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("z y\n", encoding="utf-8")
    d = Dictionary.build([tmp_path / "a.txt", tmp_path / "b.txt"], threshold=0, padding_factor=4)
    assert d.symbols[4:7] == ["y", "x", "z"] and len(d) % 4 == 0
    assert d.count[d.eos] == 3  # one </s> per line, as fairseq-preprocess counts
