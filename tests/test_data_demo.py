"""Generated German->English numbers/dates corpus: grammar, determinism, disjoint splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pet.data.demo_corpus import (
    english_cardinal,
    english_ordinal,
    english_year,
    generate_pairs,
    german_cardinal,
    german_ordinal,
    german_year,
    write_demo_corpus,
)
from pet.errors import DataError


@pytest.mark.parametrize(
    "n,de,en",
    [
        (0, "null", "zero"),
        (1, "eins", "one"),
        (17, "siebzehn", "seventeen"),
        (21, "einundzwanzig", "twenty-one"),
        (30, "dreißig", "thirty"),
        (101, "einhunderteins", "one hundred one"),
        (354, "dreihundertvierundfünfzig", "three hundred fifty-four"),
        (1000, "eintausend", "one thousand"),
        (21_001, "einundzwanzigtausendeins", "twenty-one thousand one"),
        (999_999, "neunhundertneunundneunzigtausendneunhundertneunundneunzig",
         "nine hundred ninety-nine thousand nine hundred ninety-nine"),
    ],
)
def test_cardinals(n: int, de: str, en: str) -> None:
    assert german_cardinal(n) == de and english_cardinal(n) == en


def test_ordinals_and_years() -> None:
    assert f"am {german_ordinal(3, 'dat')} März" == "am dritten März"
    assert german_ordinal(21, "nom") == "einundzwanzigste" and english_ordinal(21) == "twenty-first"
    assert [german_ordinal(d, "nom") for d in (1, 7, 16, 20, 31)] == [
        "erste", "siebte", "sechzehnte", "zwanzigste", "einunddreißigste"]
    assert [english_ordinal(d) for d in (2, 12, 13, 20, 30)] == ["second", "twelfth", "thirteenth", "twentieth", "thirtieth"]
    assert (german_year(2012), english_year(2012)) == ("zweitausendzwölf", "two thousand twelve")
    assert (german_year(1984), english_year(1984)) == ("neunzehnhundertvierundachtzig", "nineteen eighty-four")
    assert english_year(1905) == "nineteen oh five" and english_year(1900) == "nineteen hundred"


def test_deterministic_distinct_and_reordering() -> None:
    pairs = generate_pairs(3000, seed=5)
    assert pairs == generate_pairs(3000, seed=5)
    assert pairs != generate_pairs(3000, seed=6)
    assert len({de for de, _ in pairs}) == len({en for _, en in pairs}) == 3000
    # verb-final participles and fronted dates are present
    assert any(de.endswith("gesehen.") and " saw " in en for de, en in pairs)
    assert any(de.startswith("Am ") and en.startswith("On ") for de, en in pairs)


def test_written_splits_do_not_overlap(tmp_path: Path) -> None:
    counts = write_demo_corpus(tmp_path, train_size=800, valid_size=60, test_size=60, seed=1)
    assert counts == {"train": 800, "valid": 60, "test": 60}
    text = {(s, l): (tmp_path / f"{s}.{l}").read_text(encoding="utf-8").split("\n")[:-1]
            for s in ("train", "valid", "test") for l in ("de", "en")}
    for lang in ("de", "en"):
        train = set(text["train", lang])
        assert not train & set(text["valid", lang]) and not train & set(text["test", lang])
        assert not set(text["valid", lang]) & set(text["test", lang])
    first = {k: list(v) for k, v in text.items()}
    write_demo_corpus(tmp_path, train_size=800, valid_size=60, test_size=60, seed=1)
    assert first == {(s, l): (tmp_path / f"{s}.{l}").read_text(encoding="utf-8").split("\n")[:-1]
                     for s in ("train", "valid", "test") for l in ("de", "en")}
    with pytest.raises(DataError, match="German-English"):
        write_demo_corpus(tmp_path, train_size=1, valid_size=1, test_size=1, seed=1, src_lang="fr")
