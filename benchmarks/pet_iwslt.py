"""PET benchmark on IWSLT'14 de-en (26.9k-pair training subset in ../shared), CPU-sized.

Trains and compares, at equal student budgets (optimizer updates):

    teacher        transformer_iwslt_de_en (6+6 x 512), CE            --teacher-updates
    tiny_teacher   pet_tiny_teacher (6+6, 320/240), CE                --tiny-updates
    pet            pet_student: warm-up (teacher = baseline) W updates, then KD
                   (teacher = tiny teacher) S - W updates             --warmup-updates W, --student-updates S
    scratch  (a)   pet_student, plain CE from random init, S updates
    kd_only  (b)   pet_student, KD from random init (no warm-up), S updates

and reports for each: test BLEU (beam 5, BPE removed, tokenized; sacreBLEU
too), parameters, and measured translation latency (beam 5, free decoding of
real test sentences, median of timed passes) at batch 1 and batch 64, with the
speedup of each model over the teacher next to PET's published +45.15 %
(and -81.20 % parameters, -0.27 BLEU).

Equal budgets are equal update counts (same max_tokens): the student sees the
same number of batches in (a), (b) and PET. PET's and (b)'s updates also run a
teacher forward pass, so their wall-clock time is longer; it is reported.

    python benchmarks/pet_iwslt.py --threads 4                       # the real (CPU) run
    python benchmarks/pet_iwslt.py --smoke                           # proves it runs (< 2 min)
    python benchmarks/pet_iwslt.py --device cuda --teacher-updates 20000 ...

Every stage is pet's own, run as ``python -m pet stage=...`` in its own process
(``--jobs N``: N stages at a time, one thread each; latency always alone), tracked in MLflow unless ``--tracking none``. Results:
<out>/results.json and a table on stdout. Re-running resumes finished stages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

from stage_runner import REPO, compose, run_pet_stage, stage_threads  # benchmarks/ is on sys.path when run as a script

SHARED_BPE = REPO.parent / "shared" / "data" / "iwslt14" / "bpe"

PUBLISHED = {"params_change_pct": -81.20, "speedup_pct": 45.15, "bleu_change": -0.27}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = args.out
        self.common = [
            f"data={args.data}",
            *args.data_overrides,
            f"paths.output_root={args.out / 'pet_outputs'}",
            f"paths.data_root={args.data_root}",
            f"trainer.device={args.device}",
            "trainer.progress_bar=none",
            f"trainer.max_tokens={args.max_tokens}",
            f"trainer.log_interval={args.log_interval}",
            f"optim.lr={args.lr}",
            f"optim.warmup_updates={args.lr_warmup}",
            f"trainer.seed={args.seed}",
            "experiment_name=pet_iwslt_bench",
        ]
        if args.tracking == "none":
            self.common.append("tracking=none")
        else:
            self.common.append(f"tracking.uri=sqlite:///{(args.out / 'mlflow.db').resolve()}")
        self.timings: dict[str, float] = {}

    def stage(self, name: str, overrides: list[str]):
        """One pet stage in its own process (benchmarks/stage_runner.py), as a StageResult."""
        from pet.stages.common import StageResult

        res = run_pet_stage(name, self.out / "runs" / name,
                            [*self.common, *overrides, f"run_name={name}", f"tracking.run_name={name}"],
                            stage_threads(self.args.jobs, self.args.threads))
        if "wall_s" in res:
            self.timings[name] = res["wall_s"]
        return StageResult(**{k: v for k, v in res.items() if k in StageResult.__dataclass_fields__})

    def evaluate(self, name: str, checkpoint: str):
        a = self.args
        return self.stage(
            f"eval_{name}",
            ["stage=evaluate", f"init_from={checkpoint}", f"generation.max_examples={a.eval_sentences}",
             f"generation.beam={a.beam}"],
        )


def subset_corpus(out: Path, train_lines: int, eval_lines: int) -> Path:
    """The first lines of each shared split, as a small preprocessed corpus (smoke runs)."""
    folder = out / f"iwslt14_first{train_lines}"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_lines), ("valid", eval_lines), ("test", eval_lines)):
        for lang in ("de", "en"):
            with open(SHARED_BPE / f"{split}.{lang}", encoding="utf-8") as fh:
                lines = [next(fh) for _ in range(n)]
            (folder / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    return folder


def latency(checkpoint: str, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pet.analysis.latency import latency_sweep
    from pet.checkpoint import load_checkpoint, model_from_checkpoint

    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    model = model_from_checkpoint(load_checkpoint(checkpoint)).to(device).eval()
    test = data.split("test")
    n = max(args.latency_sentences_b1, args.latency_sentences_b64)
    batch = test.collate(list(range(min(n, len(test)))))
    pad = data.src_dict.pad if not callable(data.src_dict.pad) else data.src_dict.pad()
    sentences = [row[row.ne(pad)] for row in batch.src_tokens]
    out: dict[str, Any] = {}
    # Free decoding of real sentences is what a user waits for; a fixed number
    # of decoder steps (--fixed-length) isolates the per-step cost from output length.
    for prefix, fixed in (("", None), ("fixed_", args.fixed_length or None)):
        if prefix and not fixed:
            continue
        results = latency_sweep(
            model,
            batch_sizes=(1, 64),
            sentences=sentences,
            num_sentences={1: args.latency_sentences_b1, 64: args.latency_sentences_b64},
            beam=args.beam,
            fixed_length=fixed,
            num_threads=args.threads if device.type == "cpu" else None,
            warmup=args.latency_warmup,
            repeats=args.latency_repeats,
        )
        out.update({prefix + key: r.to_dict() for key, r in zip(("b1", "b64"), results)})
    return out


def shape_latency(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """Fixed-length decoding speed of the three *architectures* at this corpus's
    vocabulary sizes: the full-size baseline (transformer_iwslt_de_en), the tiny
    teacher and the PET student, timed interleaved (pet.pruning.report.paired_latency).

    With a fixed number of decoder steps the cost does not depend on the
    weights, so this is the speedup PET's shape buys over the real baseline even
    when the CPU budget trains a smaller teacher; it is the number to set next
    to the published +45.15 %."""
    import torch

    from pet.models.spec import spec_from_config
    from pet.models.transformer import TransformerModel
    from pet.pruning.report import paired_latency

    torch.manual_seed(0)
    names = (args.speed_reference, args.tiny_model, args.student_model)
    models = []
    for name in names:
        cfg = compose(["stage=summary", f"model={name}", "tracking=none"])
        models.append(TransformerModel(spec_from_config(cfg.model, len(data.src_dict), len(data.tgt_dict))).eval())
    ms = paired_latency(models, beam=args.beam, length=args.fixed_length or 25, batch_sizes=(1, 64),
                        repeats=args.latency_repeats, threads=args.threads)
    out = {}
    for name, model, t in zip(names, models, ms):
        out[name] = {"parameters": model.num_parameters(), "ms_per_sentence": t,
                     "speedup_pct": {bs: 100.0 * (ms[0][bs] / t[bs] - 1) for bs in t}}
    return out


def done_future(value: Any) -> Optional[Future]:
    """An already finished Future holding ``value``, or None for None."""
    if value is None:
        return None
    f: Future = Future()
    f.set_result(value)
    return f


def given(path: Path | None, flag: str):
    """A StageResult standing for an already trained model passed on the command line."""
    if path is None:
        return None
    from pet.stages.common import StageResult

    if not path.exists():
        sys.exit(f"--{flag.replace('_', '-')} {path} does not exist")
    return StageResult(stage="pretrain", metric_name="given", metric=0.0, checkpoint=str(path.resolve()), metrics={})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "pet_iwslt")
    ap.add_argument("--data-root", type=Path, default=REPO / "outputs" / "data",
                    help="prepared corpora (shared with other runs; preparation is idempotent)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("SLURM_CPUS_PER_TASK", 2)),
                    help="threads of the latency runs (and of every stage without --jobs)")
    ap.add_argument("--jobs", type=int, default=1, help="stages run at once, 1 thread each (training and BLEU only)")
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    ap.add_argument("--data", default="iwslt14_shared", help="pet data config (conf/data/)")
    ap.add_argument("--subset", type=int, default=0,
                    help="use only the first N training and N/10 valid/test pairs of the shared data (0 = all)")
    ap.add_argument("--teacher-model", default="transformer_iwslt_de_en")
    ap.add_argument("--tiny-model", default="pet_tiny_teacher")
    ap.add_argument("--student-model", default="pet_student")
    ap.add_argument("--teacher-updates", type=int, default=3000)
    ap.add_argument("--teacher-checkpoint", type=Path, default=None,
                    help="an already trained baseline on the same data (e.g. the core benchmark's) instead of training one")
    ap.add_argument("--tiny-updates", type=int, default=3000)
    ap.add_argument("--tiny-lr", type=float, default=5e-4,
                    help="the tiny teacher's peak LR (6+6 post-LN layers stall at 1e-3 with a short warm-up)")
    ap.add_argument("--tiny-checkpoint", type=Path, default=None,
                    help="an already trained KD teacher instead of training the tiny teacher (its widths must match "
                         "the student's for the hidden-state term, otherwise pass --kd-beta 0)")
    ap.add_argument("--kd-beta", type=float, default=None, help="distill.beta for PET's KD and (b) (default: distill/kd.yaml)")
    ap.add_argument("--warmup-updates", type=int, default=400, help="PET warm-up part of the student budget")
    ap.add_argument("--student-updates", type=int, default=2400, help="student budget: PET, (a) and (b) alike")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-warmup", type=int, default=400, help="inverse-sqrt warm-up updates (recipe: 4000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--eval-sentences", type=int, default=0, help="test sentences scored; 0 = all 6,750")
    ap.add_argument("--latency-sentences-b1", type=int, default=32)
    ap.add_argument("--latency-sentences-b64", type=int, default=256)
    ap.add_argument("--fixed-length", type=int, default=0,
                    help="also time exactly L decoder steps per sentence (results.json: fixed_b1/fixed_b64)")
    ap.add_argument("--speed-reference", default="transformer_iwslt_de_en",
                    help="architecture whose fixed-length decoding speed the PET shape is compared with")
    ap.add_argument("--latency-warmup", type=int, default=1)
    ap.add_argument("--latency-repeats", type=int, default=3)
    ap.add_argument("--log-interval", type=int, default=50)
    ap.add_argument("--tracking", choices=("mlflow", "none"), default="mlflow")
    ap.add_argument("--smoke", action="store_true",
                    help="a few updates per model on the first 1,000 pairs, 4 test sentences, tiny latency runs: proves the script works")
    args = ap.parse_args()
    if args.smoke:
        args.teacher_updates, args.tiny_updates, args.warmup_updates, args.student_updates = 2, 2, 1, 2
        args.max_tokens, args.eval_sentences, args.log_interval = 1024, 4, 1
        args.subset = args.subset or 1000
        args.latency_sentences_b1, args.latency_sentences_b64 = 1, 4
        args.latency_warmup, args.latency_repeats = 0, 1
        args.fixed_length = args.fixed_length or 5
        if args.out == ap.get_default("out"):
            args.out = REPO / "outputs" / "bench" / "pet_iwslt_smoke"
        args.tracking = "none" if args.tracking == ap.get_default("tracking") else args.tracking
    if not 0 < args.warmup_updates < args.student_updates:
        sys.exit("need 0 < --warmup-updates < --student-updates (PET = warm-up + KD within the student budget)")
    needs_shared = args.data == "iwslt14_shared" or args.subset
    if needs_shared and not (SHARED_BPE / "train.de").exists():
        sys.exit(f"IWSLT'14 data not found at {SHARED_BPE}; this benchmark reads ../shared beside the checkout")
    os.environ.setdefault("PET_ROOT", str(REPO))
    args.out.mkdir(parents=True, exist_ok=True)
    args.data_overrides = []
    if args.subset:
        folder = subset_corpus(args.out, args.subset, max(args.subset // 10, 10))
        args.data = "iwslt14_shared"
        args.data_overrides = [f"data.name=iwslt14_first{args.subset}", f"data.source={folder}"]
        args.data_root = args.out / "data"
    from pet.runtime import setup_logging

    setup_logging()
    started = time.perf_counter()
    b = Bench(args)
    S, W = args.student_updates, args.warmup_updates
    kd = [f"distill.beta={args.kd_beta}"] if args.kd_beta is not None else []
    student = f"model={args.student_model}"
    # Submitted in dependency order: a stage only waits on stages submitted
    # before it, which FIFO workers have already started, so --jobs N cannot deadlock.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        def submit(name: str, overrides: Callable[[], list[str]]) -> Future:
            return pool.submit(lambda: b.stage(name, overrides()))

        teacher_f = done_future(given(args.teacher_checkpoint, "teacher_checkpoint")) or submit(
            "teacher", lambda: ["stage=pretrain", f"model={args.teacher_model}", f"trainer.max_update={args.teacher_updates}"])
        tiny_f = done_future(given(args.tiny_checkpoint, "tiny_checkpoint")) or submit(
            "tiny_teacher", lambda: ["stage=pretrain", f"model={args.tiny_model}", f"trainer.max_update={args.tiny_updates}",
                                     f"optim.lr={args.tiny_lr}"])
        warm_f = submit("pet_warmup", lambda: ["stage=distill", "distill=warmup", student,
                                               f"distill.teacher={teacher_f.result().checkpoint}", f"trainer.max_update={W}"])
        scratch_f = submit("scratch", lambda: ["stage=pretrain", student, f"trainer.max_update={S}"])
        # KD continues the warmed-up student, its optimizer and LR schedule
        # (distill.continue_schedule): max_update S counts the warm-up's W updates.
        pet_f = submit("pet", lambda: ["stage=distill", "distill=kd", student, f"init_from={warm_f.result().checkpoint}",
                                       f"distill.teacher={tiny_f.result().checkpoint}", f"trainer.max_update={S}", *kd])
        kd_only_f = submit("kd_only", lambda: ["stage=distill", "distill=kd", student, "distill.from_scratch=true",
                                               f"distill.teacher={tiny_f.result().checkpoint}", f"trainer.max_update={S}", *kd])
        teacher, tiny, warm, pet, scratch, kd_only = (
            f.result() for f in (teacher_f, tiny_f, warm_f, pet_f, scratch_f, kd_only_f))
    if args.teacher_checkpoint is not None:
        args.teacher_updates = "given"
    if args.tiny_checkpoint is not None:
        args.tiny_updates = "given"
    systems = {"teacher": teacher, "tiny_teacher": tiny, "pet": pet, "scratch": scratch, "kd_only": kd_only}
    if tiny.checkpoint == teacher.checkpoint:  # one model plays both teachers: one row
        del systems["tiny_teacher"]
    train_seconds = {
        "teacher": teacher.metrics.get("train_seconds"),
        "tiny_teacher": tiny.metrics.get("train_seconds"),
        "pet": (warm.metrics.get("train_seconds") or 0) + (pet.metrics.get("train_seconds") or 0),
        "scratch": scratch.metrics.get("train_seconds"),
        "kd_only": kd_only.metrics.get("train_seconds"),
    }
    updates = {"teacher": args.teacher_updates, "tiny_teacher": args.tiny_updates, "pet": f"{W}+{S - W}",
               "scratch": S, "kd_only": S}
    from pet.stages.common import load_data

    data = load_data(compose(b.common + ["stage=evaluate", f"paths.run_dir={args.out / 'runs' / 'latency'}"]))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        evals = dict(zip(systems, pool.map(lambda item: b.evaluate(item[0], item[1].checkpoint), systems.items())))
    rows: dict[str, dict[str, Any]] = {}
    for name, res in systems.items():  # latency: one model at a time, on an otherwise idle machine
        ev = evals[name]
        print(f"[latency] {name}", flush=True)
        lat = latency(res.checkpoint, data, args)
        rows[name] = {
            "bleu": ev.metrics["bleu"],
            "sacrebleu": ev.metrics.get("sacrebleu"),
            "parameters": ev.metrics["parameters"],
            "updates": updates[name],
            "train_seconds": train_seconds[name],
            "checkpoint": res.checkpoint,
            "latency": lat,
        }
    base = rows["teacher"]
    for r in rows.values():
        r["params_change_pct"] = 100.0 * (r["parameters"] / base["parameters"] - 1)
        r["bleu_change"] = r["bleu"] - base["bleu"]
        for key in r["latency"]:
            t_ms = base["latency"][key]["ms_per_sentence"]
            r[f"speedup_{key}_pct"] = 100.0 * (t_ms / r["latency"][key]["ms_per_sentence"] - 1)
    results = {
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": data_description(args),
        "published_pet": PUBLISHED,
        "systems": rows,
        "pet_beats_scratch": rows["pet"]["bleu"] > rows["scratch"]["bleu"],
        "pet_beats_kd_only": rows["pet"]["bleu"] > rows["kd_only"]["bleu"],
        "shape_latency": shape_latency(args, data),
        "wall_seconds": time.perf_counter() - started,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(format_table(results))
    print(f"results: {args.out / 'results.json'}")


def data_description(args: argparse.Namespace) -> str:
    if args.subset:
        return f"IWSLT'14 de-en, first {args.subset} training pairs of the shared subset (smoke)"
    if args.data == "iwslt14_shared":
        return "IWSLT'14 de-en, 26.9k-pair training subset (../shared/data/iwslt14)"
    return f"data={args.data}"


def format_table(results: dict[str, Any]) -> str:
    s = results["setup"]
    lines = [
        "",
        f"PET benchmark: {results['data']}; beam {s['beam']}, {s['threads']} threads on {s['device']}; "
        f"student budget {s['student_updates']} updates of <= {s['max_tokens']} tokens"
        + (" [SMOKE: numbers mean nothing]" if s["smoke"] else ""),
        f"{'system':<14}{'updates':>10}{'train s':>9}{'params':>12}{'Δparams':>9}{'BLEU':>7}{'ΔBLEU':>7}"
        f"{'ms/sent b1':>11}{'ms/sent b64':>12}{'speedup b1':>11}{'speedup b64':>12}",
    ]
    for name, r in results["systems"].items():
        lat = r["latency"]
        ts = r["train_seconds"]
        lines.append(
            f"{name:<14}{str(r['updates']):>10}{(f'{ts:.0f}' if ts else '-'):>9}{r['parameters']:>12,}"
            f"{r['params_change_pct']:>8.2f}%{r['bleu']:>7.2f}{r['bleu_change']:>+7.2f}"
            f"{lat['b1']['ms_per_sentence']:>11.1f}{lat['b64']['ms_per_sentence']:>12.2f}"
            f"{r['speedup_b1_pct']:>+10.1f}%{r['speedup_b64_pct']:>+11.1f}%"
        )
    p = results["published_pet"]
    pet = results["systems"]["pet"]
    lines.append(
        f"PET measured: {pet['params_change_pct']:+.2f} % parameters, speed {pet['speedup_b1_pct']:+.1f} % (batch 1) / "
        f"{pet['speedup_b64_pct']:+.1f} % (batch 64), {pet['bleu_change']:+.2f} BLEU vs the teacher | "
        f"published: {p['params_change_pct']:+.2f} %, {p['speedup_pct']:+.2f} %, {p['bleu_change']:+.2f} BLEU"
    )
    shapes = results.get("shape_latency")
    if shapes:
        ref = s["speed_reference"]
        for name, r in shapes.items():
            lines.append(
                f"shape {name:<24} {r['parameters']:>12,} params  fixed-length ms/sent b1 {r['ms_per_sentence'][1]:.1f}, "
                f"b64 {r['ms_per_sentence'][64]:.2f}; speed vs {ref}: {r['speedup_pct'][1]:+.1f} % (b1), "
                f"{r['speedup_pct'][64]:+.1f} % (b64)"
            )
    lines.append(
        f"PET vs (a) scratch: {pet['bleu'] - results['systems']['scratch']['bleu']:+.2f} BLEU; "
        f"vs (b) KD without warm-up: {pet['bleu'] - results['systems']['kd_only']['bleu']:+.2f} BLEU (equal update budgets)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
