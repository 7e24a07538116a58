"""The converged benchmark's report: its verdicts follow the numbers, and missing runs show as missing."""

import importlib.util
import json
import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
_spec = importlib.util.spec_from_file_location("converged_report", REPO / "benchmarks" / "converged_report.py")
report = sys.modules["converged_report"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)  # a benchmark script's module, not part of the pet package

SEEDS, RATES = (1, 2), (0.5,)
SRP, PET = ("two_stage", "oneshot", "random", "single_stage"), ("pet", "kd_only", "scratch")


def evaluated(out, name: str, bleu: float, parameters: int) -> None:
    path = out / "eval" / name / "result.json"
    path.parent.mkdir(parents=True)
    metrics = {"bleu": bleu, "sacrebleu": bleu - 0.5, "chrf": bleu + 20, "parameters": parameters,
               "sacrebleu_signature": "nrefs:1|case:lc|tok:13a", "chrf_signature": "nrefs:1|case:lc|nc:6"}
    path.write_text(json.dumps({"metrics": metrics,
                                "checkpoint": str(out / name / "absent.pt")}))


def curve(run_dir):
    if run_dir.name == "teacher_de_en":
        return [{"epoch": 1, "updates": 10, "valid_loss": 7.0}, {"epoch": 2, "updates": 20, "valid_loss": 6.5}]
    if run_dir.match("srp/two_stage@0.5/seed*/finetune"):  # seed 2 plateaus an epoch later, past its best
        epochs = 3 if run_dir.parent.name == "seed1" else 4
        return [{"epoch": e, "updates": 100 * e, "valid_loss": 6.0 - 0.1 * min(e, 3)} for e in range(1, epochs + 1)]
    if run_dir.match("pet/pet/seed1/kd"):
        return [{"epoch": 1, "updates": 1500, "valid_loss": 6.25}]
    return []


def test_report_decides_each_target_on_mean_and_seed_spread(tmp_path):
    evaluated(tmp_path, "teacher_de_en", 30.0, 1000)
    evaluated(tmp_path, "teacher_en_de", 25.0, 2000)
    for seed, two, one, rnd in ((1, 29.5, 28.0, 29.0), (2, 29.7, 28.2, 29.6)):
        evaluated(tmp_path, f"srp/two_stage@0.5/seed{seed}", two, 500)
        evaluated(tmp_path, f"srp/oneshot@0.5/seed{seed}", one, 500)
        evaluated(tmp_path, f"srp/random@0.5/seed{seed}", rnd, 500)
    evaluated(tmp_path, "pet/pet/seed1", 20.0, 400)
    evaluated(tmp_path, "pet/scratch/seed1", 21.0, 400)

    text = report.write_report(tmp_path, curve, SEEDS, RATES, SRP, PET, measure=False, threads=1, repeats=1)

    targets = json.loads((tmp_path / "report.json").read_text())["targets"]
    # two-stage 29.6 vs one-shot 28.1: margin 1.5 > spread 0.2
    assert "beats oneshot at rate 0.5 by more than the seed spread: met (margin +1.50 BLEU, spread 0.20" in targets[0]
    # vs random 29.3: margin 0.3 < random's own spread 0.6
    assert "beats random at rate 0.5 by more than the seed spread: MISSED (margin +0.30 BLEU, spread 0.60" in targets[1]
    assert not any("single_stage" in t for t in targets)  # not run yet: no verdict
    assert "within 1 BLEU of its teacher: met (-0.40 BLEU)" in targets[2]
    assert "PET student beats scratch: MISSED (margin -1.00 BLEU" in targets[3]
    # the last stage's budget per seed: the plateau rule gives each run its own
    assert ("| two_stage | 0.5 | 2 | 29.60 ± 0.10 (n=2) | 29.10 ± 0.10 (n=2) | 49.60 ± 0.10 (n=2) | 500 | 50.0 % | - | "
            "3 / 4 | 300 / 400 | 5.7000 / 5.7000 |") in text
    assert "| single_stage | 0.5 | 0 | - | - | - | - | - | - | - | - | - |" in text
    assert "| pet | 1 | 20.00 | 19.50 | 40.00 | 400 | 20.0 % | - | - | 1,500 | 6.2500 |" in text  # no tiny teacher yet
    assert "sacreBLEU and chrF signatures: `nrefs:1|case:lc|nc:6`; `nrefs:1|case:lc|tok:13a`" in text
    assert "- teacher_de_en: 1: 7.00, 2: 6.50" in text
