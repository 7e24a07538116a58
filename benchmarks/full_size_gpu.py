"""Both methods at full size on one GPU, in under 10 minutes of wall clock.

The CPU benchmarks work at ``transformer_small`` scale; this is the published
architectures' recipe, on the 26.9k-pair IWSLT'14 subset in ../shared:

srp   transformer_iwslt_de_en (6+6 x 512) de->en teacher, SRP two-stage to
      compression rate 0.2 (width, then q/k, v/o, FFN; per-step geometric
      shrinking with KD from the teacher), finetuning
pet   transformer_iwslt_de_en en->de teacher and pet_tiny_teacher en->de (trained
      side by side), then pet_student: warm-up on the teacher's 4-class labels,
      KD from the tiny teacher, one LR schedule for both

Three chains run at once on the one GPU (the models are small; eager training
is launch-bound, so processes side by side use it better than one after the
other). Training stages have wall-clock budgets (``--*-minutes``), pruning
periods and the warm-up have update budgets; every final model is scored on
the whole test set (beam 5, tokenized BLEU and sacreBLEU). A table and
``<out>/results.json`` close the run.

    python benchmarks/full_size_gpu.py --device cuda --shared ../shared    # budgets sum to ~6 minutes per chain
    python benchmarks/full_size_gpu.py --smoke                             # CPU, a few updates per stage
    bash benchmarks/device_full_size.sh prepare|run                        # on a GPU machine without pet's dependencies

A re-run skips finished stages (their result.json), so an interrupted run
resumes; ``--out`` (default ~/.cache/pet-bench/full_size_gpu) holds every run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stage_runner import REPO, run_pet_stage  # benchmarks/ is on sys.path when run as a script

sys.path.insert(0, str(REPO))  # this checkout's pet, not the one pip installed
from pet.data.fileio import atomic_write_text  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "pet-bench" / "full_size_gpu"
DATA = {"de_en": "data=iwslt14_shared", "en_de": "data=iwslt14_shared_en_de"}
# fairseq's IWSLT regularisation; a larger batch and shorter warm-up than its
# 4,096-token recipe, for a few minutes of GPU time.
RECIPE = ["model.dropout=0.3", "model.attention_dropout=0.1", "model.activation_dropout=0.1",
          "optim.lr=1e-3", "optim.warmup_updates=500", "trainer.max_tokens=8192"]
RATE = 0.2


class FullSize:
    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, args.out

    def stage(self, name: str, overrides: list[str], minutes: float = 0.0, updates: int = 0) -> dict[str, Any]:
        """A stage with a wall-clock (``minutes``) or update budget; --smoke: ``updates`` or 4 updates."""
        a = self.args
        if a.smoke:
            budget = [f"trainer.max_update={updates or 4}"]
        else:
            budget = [f"trainer.max_time_minutes={minutes}"] * bool(minutes) + [f"trainer.max_update={updates}"] * bool(updates)
        smoke = ["generation.max_examples=8", "pruning.importance_batches=2", "trainer.max_tokens=2048"] if a.smoke else []
        common = ["tracking=none", "trainer.progress_bar=none", f"trainer.device={a.device}",
                  f"paths.output_root={self.out / 'outputs'}", f"paths.shared_data={a.shared / 'data'}"]
        return run_pet_stage(name, self.out / name, [*common, *overrides, *budget, *smoke], threads=a.threads)

    def evaluate(self, name: str, direction: str, checkpoint: str) -> dict[str, Any]:
        return self.stage(f"eval/{name}", [DATA[direction], "stage=evaluate", "generation.split=test",
                                           "generation.beam=5", f"init_from={checkpoint}"])

    def teacher(self, name: str, model: str, direction: str) -> dict[str, Any]:
        return self.stage(name, [DATA[direction], "stage=pretrain", f"model={model}", *RECIPE, "trainer.seed=1"],
                          minutes=self.args.minutes["teacher"])

    def srp(self) -> dict[str, dict[str, Any]]:
        teacher = self.teacher("teacher_de_en", "transformer_iwslt_de_en", "de_en")
        period = 2 if self.args.smoke else self.args.period_updates
        prune = [DATA["de_en"], "stage=prune", f"pruning.compression_rate={RATE}", "shrink=geometric",
                 f"pruning.period_updates={period}", "pruning.report_bleu=false", "pruning.report_latency=false",
                 "trainer.max_tokens=8192"]
        s1 = self.stage("srp/prune_emb", [*prune, "pruning=two_stage_1", f"init_from={teacher['checkpoint']}"])
        s2 = self.stage("srp/prune_heads_ffn", [*prune, "pruning=two_stage_2", f"init_from={s1['checkpoint']}"])
        ft = self.stage("srp/finetune", [DATA["de_en"], "stage=finetune", "trainer.max_tokens=8192",
                                         f"init_from={s2['checkpoint']}"], minutes=self.args.minutes["finetune"])
        return {"teacher_de_en": self.evaluate("teacher_de_en", "de_en", teacher["checkpoint"]),
                "srp_two_stage_0.2": self.evaluate("srp_two_stage", "de_en", ft["checkpoint"])}

    def pet(self) -> dict[str, dict[str, Any]]:
        with ThreadPoolExecutor(max_workers=2) as pool:
            teacher_job = pool.submit(self.teacher, "teacher_en_de", "transformer_iwslt_de_en", "en_de")
            tiny_job = pool.submit(self.teacher, "tiny_teacher_en_de", "pet_tiny_teacher", "en_de")
            teacher, tiny = teacher_job.result(), tiny_job.result()
        student = [DATA["en_de"], "model=pet_student", *RECIPE, "trainer.seed=1"]
        warm = self.stage("pet/warmup", [*student, "stage=distill", "distill=warmup",
                                         f"distill.teacher={teacher['checkpoint']}", "distill.from_scratch=true"],
                          updates=2 if self.args.smoke else self.args.warmup_updates)
        kd = self.stage("pet/kd", [*student, "stage=distill", "distill=kd", f"distill.teacher={tiny['checkpoint']}",
                                   f"init_from={warm['checkpoint']}", "distill.continue_schedule=true"],
                        minutes=self.args.minutes["student"])
        return {"teacher_en_de": self.evaluate("teacher_en_de", "en_de", teacher["checkpoint"]),
                "tiny_teacher_en_de": self.evaluate("tiny_teacher_en_de", "en_de", tiny["checkpoint"]),
                "pet_student": self.evaluate("pet_student", "en_de", kd["checkpoint"])}

    def run(self) -> dict[str, dict[str, Any]]:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:  # the PET chain trains two teachers at once itself
            srp, pet = pool.submit(self.srp), pool.submit(self.pet)
            results = {**srp.result(), **pet.result()}
        print(f"[full-size] all chains in {time.perf_counter() - started:.0f} s", flush=True)
        return results


def table(results: dict[str, dict[str, Any]]) -> str:
    """One line per final model; each student's size relative to its teacher."""
    teacher_of = {"srp_two_stage_0.2": "teacher_de_en", "pet_student": "teacher_en_de",
                  "tiny_teacher_en_de": "teacher_en_de"}
    lines = [f"{'model':<22}{'BLEU':>7}{'sacreBLEU':>11}{'params':>13}{'vs teacher':>12}{'dBLEU':>8}"]
    for name, r in results.items():
        m = r["metrics"]
        ref = results.get(teacher_of.get(name, ""), {}).get("metrics")
        rel = f"{m['parameters'] / ref['parameters']:.3f}" if ref else "-"
        delta = f"{m['bleu'] - ref['bleu']:+.2f}" if ref else "-"
        lines.append(f"{name:<22}{m['bleu']:>7.2f}{m['sacrebleu']:>11.2f}{m['parameters']:>13,}{rel:>12}{delta:>8}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (the recipe) or cpu (with --smoke)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared/ folder holding data/iwslt14")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per stage process")
    ap.add_argument("--teacher-minutes", type=float, default=2.5)
    ap.add_argument("--finetune-minutes", type=float, default=1.0)
    ap.add_argument("--student-minutes", type=float, default=1.5, help="KD wall clock of the PET student")
    ap.add_argument("--period-updates", type=int, default=300, help="updates of each SRP stage's pruning period")
    ap.add_argument("--warmup-updates", type=int, default=300, help="PET warm-up updates (4-class task)")
    ap.add_argument("--smoke", action="store_true", help="4 updates per stage, 8 test sentences (CPU): proves it runs")
    args = ap.parse_args()
    if args.smoke:
        args.device = "cpu"
    args.minutes = {"teacher": args.teacher_minutes, "finetune": args.finetune_minutes,
                    "student": args.student_minutes}
    args.out, args.shared = args.out.expanduser().resolve(), args.shared.expanduser().resolve()
    if not (args.shared / "data" / "iwslt14" / "bpe" / "train.de").exists():
        sys.exit(f"IWSLT'14 data not found under {args.shared}/data/iwslt14; pass --shared <folder holding data/>")
    if args.device == "cuda":
        import torch  # only to fail early, before any stage starts

        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device visible (torch.cuda.is_available() is False); "
                     "use --smoke to check the chain on CPU")
    results = FullSize(args).run()
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
