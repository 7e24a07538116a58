"""evaluate's sacreBLEU and chrF are what the sacrebleu command gives on the
same files: detokenized hypotheses against the raw, cased reference file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pet.stages import run_stage
from tests.conftest import compose_cfg

SACREBLEU = Path(sys.executable).with_name("sacrebleu")
CORPUS = ["data=demo", "data.demo_train_size=400", "data.demo_valid_size=40", "data.demo_test_size=40",
          "data.bpe_merges=200"]
TRAIN = ["model=transformer_tiny", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
         "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "trainer.max_tokens=600", "optim.warmup_updates=10",
         "optim.lr=3e-3", "trainer.max_epoch=4"]


def sacrebleu_cli(ref: Path, hyp: Path, lowercase: bool) -> list[float]:
    flags = ["-lc", "--chrf-lowercase"] if lowercase else []
    out = subprocess.run([str(SACREBLEU), str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "-b", "-w", "4", *flags],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("lowercase", [True, False])
def test_evaluate_equals_the_sacrebleu_command(tmp_path, lowercase):
    if not SACREBLEU.exists():
        pytest.skip("the sacrebleu command is not installed beside this python")
    data = [*CORPUS, f"data.lowercase={lowercase}", f"data.name=demo_lc{int(lowercase)}"]
    model = run_stage(compose_cfg(tmp_path, *data, *TRAIN, "stage=pretrain", f"paths.run_dir={tmp_path}/train"))
    result = run_stage(compose_cfg(tmp_path, *data, "stage=evaluate", f"init_from={model.checkpoint}",
                                   f"paths.run_dir={tmp_path}/eval"))
    ref = Path(result.metrics["references"])
    assert ref == tmp_path / "data" / f"demo_lc{int(lowercase)}" / "raw" / "test.en"
    assert any(c.isupper() for c in ref.read_text()), "the references are the raw, cased text"
    bleu, chrf = sacrebleu_cli(ref, tmp_path / "eval" / "hyp.detok.txt", lowercase)
    assert result.metrics["sacrebleu"] == pytest.approx(bleu, abs=1e-4)
    assert result.metrics["chrf"] == pytest.approx(chrf, abs=1e-4) and chrf > 0
    assert ("case:lc" in result.metrics["sacrebleu_signature"]) == lowercase
    assert (tmp_path / "eval" / "ref.raw.txt").read_text() == ref.read_text()
