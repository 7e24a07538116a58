"""A generated German->English corpus of numbers and dates for the offline demo.

Why generated: the demo must train and translate in minutes on a laptop with
no network, yet show that the model learns something non-trivial. German
number words compound and reorder (``einundzwanzig`` = one-and-twenty,
``dreihundertvierundfünfzig`` -> "three hundred fifty-four"), German ordinals
inflect by case (``am dritten März`` / ``der dritte März``), German years read
as hundreds (``neunzehnhundertvierundachtzig`` -> "nineteen eighty-four"), and
German sentences put participles last and invert subject and verb after a
fronted date (``Am dritten März habe ich zwei Hunde gesehen.`` -> "On March
third, I saw two dogs."). A small Transformer learns these in a few epochs;
BLEU on the test split tells at a glance whether training works.

Deterministic: the same seed gives the same files, byte for byte. Every pair
is distinct on both sides, so valid/test sentences never occur in train.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pet.data.fileio import atomic_write_lines
from pet.errors import DataError

# ------------------------------------------------------------------- numbers
_DE_ONES = [
    "null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn",
    "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn",
]
_DE_TENS = ["", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"]
_EN_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]
_EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _de_below_100(n: int, one: str) -> str:
    if n == 1:
        return one
    if n < 20:
        return _DE_ONES[n]
    tens, ones = divmod(n, 10)
    if ones == 0:
        return _DE_TENS[tens]
    unit = "ein" if ones == 1 else _DE_ONES[ones]
    return f"{unit}und{_DE_TENS[tens]}"  # ones before tens: einundzwanzig


def _de_below_1000(n: int, one: str) -> str:
    hundreds, rest = divmod(n, 100)
    head = f"{'ein' if hundreds == 1 else _DE_ONES[hundreds]}hundert" if hundreds else ""
    if rest == 0:
        return head or _DE_ONES[0]
    return head + _de_below_100(rest, one)


def german_cardinal(n: int, one: str = "eins") -> str:
    """0 <= n < 1,000,000 as one German word; ``one`` is the form of a final 1 (eins/ein)."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"german_cardinal: {n} out of range")
    if n == 0:
        return _DE_ONES[0]
    thousands, rest = divmod(n, 1000)
    head = ""
    if thousands:
        head = ("ein" if thousands == 1 else _de_below_1000(thousands, "ein")) + "tausend"
    return head + (_de_below_1000(rest, one) if rest else "")


def _en_below_100(n: int) -> str:
    if n < 20:
        return _EN_ONES[n]
    tens, ones = divmod(n, 10)
    return _EN_TENS[tens] + (f"-{_EN_ONES[ones]}" if ones else "")


def _en_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = [f"{_EN_ONES[hundreds]} hundred"] if hundreds else []
    if rest or not hundreds:
        parts.append(_en_below_100(rest))
    return " ".join(parts)


def english_cardinal(n: int) -> str:
    """0 <= n < 1,000,000 in American English words: 354 -> "three hundred fifty-four"."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"english_cardinal: {n} out of range")
    thousands, rest = divmod(n, 1000)
    parts = [f"{_en_below_1000(thousands)} thousand"] if thousands else []
    if rest or not thousands:
        parts.append(_en_below_1000(rest))
    return " ".join(parts)


# ------------------------------------------------------------------- dates
_DE_ORD_IRREGULAR = {1: "erst", 3: "dritt", 7: "siebt", 8: "acht"}
_EN_ORD_IRREGULAR = {
    1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh",
    8: "eighth", 9: "ninth", 10: "tenth", 11: "eleventh", 12: "twelfth",
}
MONTHS = [
    ("Januar", "January", 31), ("Februar", "February", 28), ("März", "March", 31), ("April", "April", 30),
    ("Mai", "May", 31), ("Juni", "June", 30), ("Juli", "July", 31), ("August", "August", 31),
    ("September", "September", 30), ("Oktober", "October", 31), ("November", "November", 30),
    ("Dezember", "December", 31),
]


def german_ordinal(day: int, case: str) -> str:
    """Day 1..31 as a German ordinal: case "nom" (der dritte) or "dat" (am dritten)."""
    if day in _DE_ORD_IRREGULAR:
        stem = _DE_ORD_IRREGULAR[day]
    elif day < 20:
        stem = german_cardinal(day) + "t"
    else:
        stem = german_cardinal(day, one="ein") + "st"
    return stem + ("e" if case == "nom" else "en")


def english_ordinal(day: int) -> str:
    """Day 1..31: "third", "twentieth", "twenty-first"."""
    if day in _EN_ORD_IRREGULAR:
        return _EN_ORD_IRREGULAR[day]
    if day < 20:
        return english_cardinal(day) + "th"
    tens, ones = divmod(day, 10)
    if ones == 0:
        return _EN_TENS[tens][:-1] + "ieth"  # twenty -> twentieth
    return f"{_EN_TENS[tens]}-{_EN_ORD_IRREGULAR[ones]}"


def german_year(year: int) -> str:
    """1100..1999 read as hundreds (neunzehnhundertvierundachtzig); 2000.. as thousands."""
    century, rest = divmod(year, 100)
    if 11 <= century <= 19:
        return _DE_ONES[century] + "hundert" + (_de_below_100(rest, "eins") if rest else "")
    return german_cardinal(year)


def english_year(year: int) -> str:
    """1984 -> "nineteen eighty-four", 1905 -> "nineteen oh five", 2012 -> "two thousand twelve"."""
    century, rest = divmod(year, 100)
    if 11 <= century <= 19:
        if rest == 0:
            return f"{_EN_ONES[century]} hundred"
        return f"{_EN_ONES[century]} " + (f"oh {_EN_ONES[rest]}" if rest < 10 else _en_below_100(rest))
    return english_cardinal(year)


# ------------------------------------------------------------------- phrases
@dataclass(frozen=True)
class _Noun:
    gender: str  # m | f | n: picks einen / eine / ein in the accusative
    de_sg: str
    de_pl: str
    en_sg: str
    en_pl: str


NOUNS = [
    _Noun("m", "Hund", "Hunde", "dog", "dogs"), _Noun("f", "Katze", "Katzen", "cat", "cats"),
    _Noun("n", "Buch", "Bücher", "book", "books"), _Noun("m", "Apfel", "Äpfel", "apple", "apples"),
    _Noun("n", "Haus", "Häuser", "house", "houses"), _Noun("m", "Stuhl", "Stühle", "chair", "chairs"),
    _Noun("f", "Blume", "Blumen", "flower", "flowers"), _Noun("m", "Vogel", "Vögel", "bird", "birds"),
    _Noun("n", "Auto", "Autos", "car", "cars"), _Noun("f", "Flasche", "Flaschen", "bottle", "bottles"),
    _Noun("n", "Kind", "Kinder", "child", "children"), _Noun("m", "Brief", "Briefe", "letter", "letters"),
    _Noun("f", "Tasse", "Tassen", "cup", "cups"), _Noun("m", "Baum", "Bäume", "tree", "trees"),
    _Noun("n", "Fahrrad", "Fahrräder", "bicycle", "bicycles"), _Noun("f", "Kerze", "Kerzen", "candle", "candles"),
    _Noun("m", "Stein", "Steine", "stone", "stones"), _Noun("n", "Bild", "Bilder", "picture", "pictures"),
    _Noun("f", "Münze", "Münzen", "coin", "coins"), _Noun("m", "Schuh", "Schuhe", "shoe", "shoes"),
]
# (German subject, auxiliary "haben" form, English subject, English "have" form)
SUBJECTS = [
    ("ich", "habe", "I", "have"), ("du", "hast", "you", "have"), ("er", "hat", "he", "has"),
    ("sie", "hat", "she", "has"), ("wir", "haben", "we", "have"), ("ihr", "habt", "you all", "have"),
]
# (German participle, English simple past)
VERBS = [("gesehen", "saw"), ("gekauft", "bought"), ("gefunden", "found"), ("gezählt", "counted"),
         ("verkauft", "sold"), ("gemalt", "painted")]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _count_phrase(n: int, noun: _Noun) -> tuple[str, str]:
    """Accusative noun phrase: (einen Hund, one dog), (einundzwanzig Katzen, twenty-one cats)."""
    if n == 1:
        article = {"m": "einen", "f": "eine", "n": "ein"}[noun.gender]
        return f"{article} {noun.de_sg}", f"one {noun.en_sg}"
    return f"{german_cardinal(n)} {noun.de_pl}", f"{english_cardinal(n)} {noun.en_pl}"


def _sample_count(rng: random.Random) -> int:
    """A count for a noun phrase, spread over magnitudes; avoids ...hunderteins (awkward before nouns)."""
    while True:
        bucket = rng.random()
        if bucket < 0.1:
            n = rng.randint(1, 12)
        elif bucket < 0.45:
            n = rng.randint(13, 99)
        elif bucket < 0.8:
            n = rng.randint(100, 999)
        else:
            n = rng.randint(1000, 999_999)
        if not (n > 100 and n % 100 == 1):
            return n


def _sample_number(rng: random.Random) -> int:
    bucket = rng.random()
    if bucket < 0.15:
        return rng.randint(0, 99)
    if bucket < 0.55:
        return rng.randint(100, 999)
    if bucket < 0.8:
        return rng.randint(1000, 9999)
    return rng.randint(10_000, 999_999)


def _sample_date(rng: random.Random) -> tuple[int, tuple[str, str, int]]:
    month = rng.choice(MONTHS)
    return rng.randint(1, month[2]), month


def _sample_year(rng: random.Random) -> int:
    return rng.randint(1800, 2099)


Pair = tuple[str, str]


def _bare_number(rng: random.Random) -> Pair:
    n = _sample_number(rng)
    return german_cardinal(n), english_cardinal(n)


def _bare_date(rng: random.Random) -> Pair:
    day, (de_m, en_m, _) = _sample_date(rng)
    if rng.random() < 0.5:
        return f"am {german_ordinal(day, 'dat')} {de_m}", f"on {en_m} {english_ordinal(day)}"
    year = _sample_year(rng)
    return (
        f"der {german_ordinal(day, 'nom')} {de_m} {german_year(year)}",
        f"{en_m} {english_ordinal(day)}, {english_year(year)}",
    )


def _have(rng: random.Random) -> Pair:
    de_subj, de_aux, en_subj, en_have = rng.choice(SUBJECTS)
    de_np, en_np = _count_phrase(_sample_count(rng), rng.choice(NOUNS))
    return f"{_cap(de_subj)} {de_aux} {de_np}.", f"{_cap(en_subj)} {en_have} {en_np}."


def _past(rng: random.Random) -> Pair:
    # verb-final participle in German, SVO in English
    de_subj, de_aux, en_subj, _ = rng.choice(SUBJECTS)
    de_part, en_past = rng.choice(VERBS)
    de_np, en_np = _count_phrase(_sample_count(rng), rng.choice(NOUNS))
    return f"{_cap(de_subj)} {de_aux} {de_np} {de_part}.", f"{_cap(en_subj)} {en_past} {en_np}."


def _dated_past(rng: random.Random) -> Pair:
    # fronted date: German inverts to verb-subject, English keeps subject-verb
    de_subj, de_aux, en_subj, _ = rng.choice(SUBJECTS)
    de_part, en_past = rng.choice(VERBS)
    day, (de_m, en_m, _) = _sample_date(rng)
    de_np, en_np = _count_phrase(_sample_count(rng), rng.choice(NOUNS))
    return (
        f"Am {german_ordinal(day, 'dat')} {de_m} {de_aux} {de_subj} {de_np} {de_part}.",
        f"On {en_m} {english_ordinal(day)}, {en_subj} {en_past} {en_np}.",
    )


def _born(rng: random.Random) -> Pair:
    day, (de_m, en_m, _) = _sample_date(rng)
    year = _sample_year(rng)
    de_subj, en_subj = rng.choice([("Er", "He"), ("Sie", "She"), ("Mein Vater", "My father"),
                                   ("Meine Mutter", "My mother"), ("Das Kind", "The child")])
    return (
        f"{de_subj} wurde am {german_ordinal(day, 'dat')} {de_m} {german_year(year)} geboren.",
        f"{en_subj} was born on {en_m} {english_ordinal(day)}, {english_year(year)}.",
    )


def _birthday(rng: random.Random) -> Pair:
    day, (de_m, en_m, _) = _sample_date(rng)
    de_poss, en_poss = rng.choice([("mein", "my"), ("dein", "your"), ("sein", "his"), ("ihr", "her"),
                                   ("unser", "our")])
    return (
        f"Der {german_ordinal(day, 'nom')} {de_m} ist {de_poss} Geburtstag.",
        f"{en_m} {english_ordinal(day)} is {en_poss} birthday.",
    )


def _sum(rng: random.Random) -> Pair:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return (
        f"{_cap(german_cardinal(a))} plus {german_cardinal(b)} ist {german_cardinal(a + b)}.",
        f"{_cap(english_cardinal(a))} plus {english_cardinal(b)} is {english_cardinal(a + b)}.",
    )


def _price(rng: random.Random) -> Pair:
    n = _sample_count(rng)
    if n == 1:
        return "Das kostet einen Euro.", "That costs one euro."
    return f"Das kostet {german_cardinal(n)} Euro.", f"That costs {english_cardinal(n)} euros."


def _year_count(rng: random.Random) -> Pair:
    year = _sample_year(rng)
    n = _sample_count(rng)
    noun = rng.choice(NOUNS)
    de_np, en_np = _count_phrase(n, noun)
    was = "was" if n == 1 else "were"
    return f"Im Jahr {german_year(year)} gab es {de_np}.", f"In {english_year(year)}, there {was} {en_np}."


def _age(rng: random.Random) -> Pair:
    n = rng.randint(1, 110)
    de_subj, de_is, en_subj, en_is = rng.choice([("Er", "ist", "He", "is"), ("Sie", "ist", "She", "is"),
                                                 ("Ich", "bin", "I", "am"), ("Der Baum", "ist", "The tree", "is")])
    if n == 1:
        return f"{de_subj} {de_is} ein Jahr alt.", f"{en_subj} {en_is} one year old."
    return f"{de_subj} {de_is} {german_cardinal(n)} Jahre alt.", f"{en_subj} {en_is} {english_cardinal(n)} years old."


# (generator, weight): bare expressions teach the vocabulary, sentences the syntax
TEMPLATES: list[tuple[Callable[[random.Random], Pair], float]] = [
    (_bare_number, 0.18), (_bare_date, 0.12), (_have, 0.12), (_past, 0.12), (_dated_past, 0.1),
    (_born, 0.08), (_birthday, 0.05), (_sum, 0.08), (_price, 0.05), (_year_count, 0.05), (_age, 0.05),
]


def generate_pairs(n: int, seed: int) -> list[Pair]:
    """``n`` distinct (German, English) pairs; no German and no English side repeats."""
    rng = random.Random(seed)
    funcs = [f for f, _ in TEMPLATES]
    weights = [w for _, w in TEMPLATES]
    seen_de: set[str] = set()
    seen_en: set[str] = set()
    pairs: list[Pair] = []
    attempts = 0
    while len(pairs) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise DataError(
                f"demo corpus: only {len(pairs)} distinct pairs after {attempts} draws, {n} requested; "
                "lower data.demo_train_size/demo_valid_size/demo_test_size"
            )
        de, en = rng.choices(funcs, weights)[0](rng)
        if de in seen_de or en in seen_en:
            continue
        seen_de.add(de)
        seen_en.add(en)
        pairs.append((de, en))
    return pairs


def write_demo_corpus(
    out_dir: Path,
    *,
    train_size: int,
    valid_size: int,
    test_size: int,
    seed: int,
    src_lang: str = "de",
    tgt_lang: str = "en",
) -> dict[str, int]:
    """Write raw ``{train,valid,test}.{src_lang,tgt_lang}`` into ``out_dir``; returns line counts."""
    if {src_lang, tgt_lang} != {"de", "en"}:
        raise DataError(
            f"the demo corpus is German-English, but data.src_lang={src_lang} data.tgt_lang={tgt_lang}; "
            "use de and en (either direction)"
        )
    for name, size in (("demo_train_size", train_size), ("demo_valid_size", valid_size), ("demo_test_size", test_size)):
        if size < 1:
            raise DataError(f"data.{name}={size}: every demo split needs at least one pair")
    pairs = generate_pairs(train_size + valid_size + test_size, seed)
    splits = {
        "valid": pairs[:valid_size],
        "test": pairs[valid_size : valid_size + test_size],
        "train": pairs[valid_size + test_size :],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        for lang, side in (("de", 0), ("en", 1)):
            atomic_write_lines(out_dir / f"{split}.{lang}", (p[side] for p in items))
    return {split: len(items) for split, items in splits.items()}
