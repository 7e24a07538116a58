"""prepare_data / load_prepared: all kinds, idempotency, fingerprints, interruption."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import pet.data.prepare as prepare_mod
from pet.config.schema import DataConfig
from pet.data.dictionary import Dictionary
from pet.data.prepare import prepare_data
from pet.data.prepared import load_prepared
from pet.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IWSLT_BPE = SHARED / "data" / "iwslt14" / "bpe"

RAW = {
    "train": (
        ["Ich habe drei Katzen.", "Das ist gut.", "Wir haben 21 Hunde gesehen.", "Er sagte: \"Hallo!\"",
         "Ein sehr langer Satz mit vielen Wörtern.", "Danke schön."],
        ["I have three cats.", "That is good.", "We saw 21 dogs.", "He said: \"Hello!\"",
         "Short.", "Thank you."],
    ),
    "valid": (["Hallo Welt."], ["Hello world."]),
    "test": (["Guten Morgen, Welt.", "Es geht's."], ["Good morning, world.", "It's ok."]),
}


def _raw_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, (de, en) in RAW.items():
        (root / f"{split}.de").write_text("\n".join(de) + "\n", encoding="utf-8")
        (root / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
    return root


def _cfg(source: Path, **kw: object) -> DataConfig:
    return DataConfig(name="mini", kind="parallel_text", source=str(source), bpe_merges=30, **kw)  # type: ignore[arg-type]


def test_parallel_text_end_to_end(tmp_path: Path) -> None:
    out = prepare_data(_cfg(_raw_folder(tmp_path / "raw")), tmp_path / "prep")
    data = load_prepared(out)
    # the 8:2-token pair is dropped by the 1.5 length ratio; raw stays aligned with tok
    assert data.meta["stats"] == {"train_before_clean": 6, "train_after_clean": 5}
    assert data.lines("train", "de", "raw")[4] == "Danke schön."
    assert data.lines("train", "en", "tok")[3] == "he said : &quot; hello ! &quot;"
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            tok = data.lines(split, lang, "tok")
            assert [line.replace("@@ ", "") for line in data.lines(split, lang)] == tok
    assert len(data.src_dict) % 8 == 0 and len(data.tgt_dict) % 8 == 0
    assert data.meta["splits"]["train"]["de_unk"] == 0
    ds = data.datasets["test"]
    assert len(ds) == 2 and ds is data.split("test")  # loaded once
    assert (ds.src_lang, ds.tgt_lang, data.name) == ("de", "en", "mini")
    with pytest.raises(DataError, match="unknown split"):
        data.split("dev")
    batch = ds.collate([0, 1])
    line = data.lines("test", "en")[0]  # test words unseen in training become <unk>
    assert data.tgt_dict.string(batch.target[0]) == " ".join(w if w in data.tgt_dict else "<unk>" for w in line.split())
    assert (out / "code").is_file() and not list(out.glob("**/.*.tmp-*"))


def test_idempotent_and_fingerprint_mismatch(tmp_path: Path) -> None:
    raw = _raw_folder(tmp_path / "raw")
    out = prepare_data(_cfg(raw), tmp_path / "prep")
    meta_before = (out / "meta.json").read_bytes()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    time.sleep(0.01)
    assert prepare_data(_cfg(raw), tmp_path / "prep") == out
    assert (out / "meta.json").read_bytes() == meta_before
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    # a field that does not affect this kind does not change the fingerprint
    prepare_data(_cfg(raw, valid_every=5, demo_train_size=10), tmp_path / "prep")
    with pytest.raises(DataError) as err:
        prepare_data(_cfg(raw, lowercase=False), tmp_path / "prep")
    msg = str(err.value)
    assert "lowercase: True -> False" in msg and "delete that folder" in msg


def test_interrupted_prepare_is_not_mistaken_for_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _raw_folder(tmp_path / "raw")
    real_save = prepare_mod.save_binarized
    calls = {"n": 0}

    def crash_on_third(arr, path):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        real_save(arr, path)

    monkeypatch.setattr(prepare_mod, "save_binarized", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(_cfg(raw), tmp_path / "prep")
    assert not (tmp_path / "prep" / "meta.json").exists()
    with pytest.raises(DataError, match=r"run `pet stage=prepare data=\.\.\.` first"):
        load_prepared(tmp_path / "prep")
    monkeypatch.setattr(prepare_mod, "save_binarized", real_save)
    out = prepare_data(_cfg(raw), tmp_path / "prep")
    assert len(load_prepared(out).datasets["valid"]) == 1
    # a complete-looking meta.json whose files went missing is redone, not trusted
    (out / "valid.en.ids.pt").unlink()
    with pytest.raises(DataError, match="incomplete"):
        load_prepared(out)
    prepare_data(_cfg(raw), out)
    assert (out / "valid.en.ids.pt").is_file()


def test_config_and_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs data.source"):
        prepare_data(DataConfig(name="x", kind="preprocessed"), tmp_path / "a")
    with pytest.raises(ConfigError, match="data.kind='bogus'"):
        prepare_data(DataConfig(name="x", kind="bogus"), tmp_path / "a")
    raw = _raw_folder(tmp_path / "raw")
    (raw / "valid.en").write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"valid\.de has 1 lines but .*valid\.en has 2"):
        prepare_data(_cfg(raw), tmp_path / "b")
    assert not (tmp_path / "b" / "meta.json").exists()
    with pytest.raises(DataError, match="no meta.json"):
        load_prepared(tmp_path / "nowhere")


def test_demo_kind(tmp_path: Path) -> None:
    cfg = DataConfig(name="demo", kind="demo", demo_train_size=400, demo_valid_size=30, demo_test_size=30)
    out = prepare_data(cfg, tmp_path / "demo")
    data = load_prepared(out)
    assert data.meta["bpe_merges"] == prepare_mod.DEMO_MAX_BPE_MERGES  # capped from 10,000
    assert {s: data.meta["splits"][s]["pairs"] for s in ("train", "valid", "test")} == {
        "train": 400, "valid": 30, "test": 30}
    raw, tok = data.lines("valid", "de", "raw"), data.lines("valid", "de", "tok")
    assert any(line != line.lower() for line in raw)  # raw stays cased; tok is lowercased
    assert all(line == line.lower() for line in tok)


def test_preprocessed_shared_iwslt(tmp_path: Path) -> None:
    if not (IWSLT_BPE / "train.de").is_file():
        pytest.skip(f"shared IWSLT'14 BPE data not found at {IWSLT_BPE} (needs ../shared beside the checkout)")
    cfg = DataConfig(name="iwslt14_bpe", kind="preprocessed", source=str(IWSLT_BPE))
    start = time.perf_counter()
    out = prepare_data(cfg, tmp_path / "iwslt")
    seconds = time.perf_counter() - start
    data = load_prepared(out)
    sizes = data.meta["dict_sizes"]
    print(f"\n[prepare preprocessed] {seconds:.2f}s, dictionary sizes {sizes}, splits {data.meta['splits']}")
    assert sizes["de"] % 8 == 0 and sizes["en"] % 8 == 0
    assert (len(data.src_dict), len(data.tgt_dict)) == (sizes["de"], sizes["en"])
    assert seconds < 30
    assert data.meta["splits"]["train"]["pairs"] == 26906 and data.meta["splits"]["train"]["de_unk"] == 0
    assert (out / "train.de").read_bytes() == (IWSLT_BPE / "train.de").read_bytes()
    assert (out / "code").read_bytes() == (IWSLT_BPE / "code").read_bytes()
    assert data.text_path("test", "en", "tok") is None
    # dict.txt is in fairseq's format and order: "symbol count", counts non-increasing
    counts = [int(line.rsplit(" ", 1)[1]) for line in (out / "dict.en.txt").read_text(encoding="utf-8").splitlines()]
    assert counts == sorted(counts, reverse=True)
    assert Dictionary.load(out / "dict.en.txt") == data.tgt_dict
    valid = data.datasets["valid"]
    assert len(valid) == 7283 and int(valid.src_sizes.min()) >= 2
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["config"]["source"] == str(IWSLT_BPE.resolve())


def test_an_edited_corpus_is_not_mistaken_for_the_prepared_one(tmp_path: Path, caplog) -> None:
    source = _raw_folder(tmp_path / "raw")
    with caplog.at_level("INFO", logger="pet.data.prepare"):
        prepare_data(_cfg(source), tmp_path / "prep")
    assert "cleaning dropped 1 of 6 training pairs" in caplog.text
    with open(source / "train.de", "a", encoding="utf-8") as de, open(source / "train.en", "a", encoding="utf-8") as en:
        de.write("Noch ein Satz.\n")
        en.write("One more sentence.\n")
    with pytest.raises(DataError, match="source_contents"):
        prepare_data(_cfg(source), tmp_path / "prep")
    assert len(load_prepared(prepare_data(_cfg(source), tmp_path / "prep2")).split("train")) == 6


def test_files_prepare_does_not_read_leave_the_fingerprint_alone(tmp_path: Path) -> None:
    """A README, another language pair or a .git folder beside the corpus is not the corpus."""
    source = _raw_folder(tmp_path / "raw")
    out = prepare_data(_cfg(source), tmp_path / "prep")
    (source / "README").write_text("where the corpus came from\n", encoding="utf-8")
    (source / "train.fr").write_text("Bonjour.\n", encoding="utf-8")
    (source / ".git").mkdir()
    (source / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    assert prepare_data(_cfg(source), tmp_path / "prep") == out


def test_a_prepared_folder_is_used_when_its_source_is_gone(tmp_path: Path, caplog) -> None:
    """Moved or deleted raw corpus (or the prepared folder copied elsewhere): the
    prepared data serves as it is if every setting matches; a changed setting
    cannot be prepared without the source."""
    source = _raw_folder(tmp_path / "raw")
    out = prepare_data(_cfg(source), tmp_path / "prep")
    source.rename(tmp_path / "moved")
    with caplog.at_level("WARNING", logger="pet.data.prepare"):
        assert prepare_data(_cfg(source), tmp_path / "prep") == out
    assert "cannot be checked" in caplog.text
    assert len(load_prepared(out).split("train")) == 5
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(_cfg(source, lowercase=False), tmp_path / "prep")
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(_cfg(source), tmp_path / "fresh")


def test_preprocessed_corpus_keeps_raw_references(tmp_path: Path) -> None:
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    raw = tmp_path / "raw"
    raw.mkdir()
    for split, (de, en) in RAW.items():
        for lang, lines in (("de", de), ("en", en)):
            (bpe / f"{split}.{lang}").write_text("\n".join(line.lower() for line in lines) + "\n", encoding="utf-8")
    (raw / "test.de").write_text("\n".join(RAW["test"][0]) + "\n", encoding="utf-8")
    (raw / "test.en").write_text("\n".join(RAW["test"][1]) + "\n", encoding="utf-8")
    cfg = DataConfig(name="pre", kind="preprocessed", source=str(bpe), raw_source=str(raw))
    data = load_prepared(prepare_data(cfg, tmp_path / "prep"))
    assert data.lines("test", "en", "raw") == RAW["test"][1]
    assert data.text_path("valid", "en", "raw") is None
    (raw / "test.en").write_text("Only one line.\n", encoding="utf-8")
    with pytest.raises(DataError, match="same sentences in the same order"):
        prepare_data(cfg, tmp_path / "prep_bad")


def test_shared_iwslt_test_split_gets_its_raw_cased_references(tmp_path: Path) -> None:
    if not (IWSLT_BPE / "test.en").exists():
        pytest.skip(f"shared IWSLT'14 data not found at {IWSLT_BPE}")
    cfg = DataConfig(name="iwslt", kind="preprocessed", source=str(IWSLT_BPE), raw_source=str(SHARED / "data/iwslt14/orig"))
    data = load_prepared(prepare_data(cfg, tmp_path / "prep"))
    raw = data.lines("test", "en", "raw")
    tok = (SHARED / "data/iwslt14/tok/test.en").read_text(encoding="utf-8").splitlines()
    assert len(raw) == len(tok) == 6750
    assert raw[0].startswith("You know, one of the intense pleasures") and tok[0].startswith("you know , one of")
    assert any("’" in line for line in raw) and sum(line != line.lower() for line in raw) > 6000
