"""Joint BPE: byte-for-byte agreement with fairseq's IWSLT'14 files, and learning."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pet.data.bpe import apply_bpe, learn_joint_bpe, load_bpe

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IWSLT = SHARED / "data" / "iwslt14"


@pytest.fixture(scope="module")
def shared_bpe():  # type: ignore[no-untyped-def]
    if not (IWSLT / "bpe" / "code").is_file() or not (IWSLT / "tok").is_dir():
        pytest.skip(f"shared IWSLT'14 data not found at {IWSLT} (needs ../shared beside the checkout)")
    return load_bpe(IWSLT / "bpe" / "code")


# All six files take ~4 s together (subword-nmt caches segmented words), so
# the training split is checked in full by default as well.
@pytest.mark.parametrize("split", ["valid", "test", "train"])
@pytest.mark.parametrize("lang", ["de", "en"])
def test_apply_reproduces_shared_bpe_byte_for_byte(shared_bpe, split: str, lang: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = apply_bpe(shared_bpe, IWSLT / "tok" / f"{split}.{lang}", tmp_path / f"{split}.{lang}")
    got = hashlib.sha256(out.read_bytes()).hexdigest()
    want = hashlib.sha256((IWSLT / "bpe" / f"{split}.{lang}").read_bytes()).hexdigest()
    assert got == want, f"{split}.{lang}: BPE output differs from the shared fairseq file"


def test_learn_and_apply_small(tmp_path: Path) -> None:
    a = tmp_path / "train.de"
    b = tmp_path / "train.en"
    a.write_text("einundzwanzig zweiundzwanzig\ndreiundzwanzig einundzwanzig\n", encoding="utf-8")
    b.write_text("twenty-one twenty-two\ntwenty-three twenty-one\n", encoding="utf-8")
    codes = learn_joint_bpe([a, b], tmp_path / "code", merges=30)
    lines = codes.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and 1 < len(lines) <= 32
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"
    out = apply_bpe(codes, a, tmp_path / "out.de")
    segmented = out.read_text(encoding="utf-8")
    assert segmented.replace("@@ ", "") == a.read_text(encoding="utf-8")
    # deterministic: learning twice gives the same table
    again = learn_joint_bpe([a, b], tmp_path / "code2", merges=30)
    assert again.read_bytes() == codes.read_bytes()
