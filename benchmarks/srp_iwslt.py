"""SRP benchmark on IWSLT'14 de-en (26.9k-pair training subset in ../shared), CPU-sized.

From one pretrained ``transformer_small`` (3+3 layers, d 256, FFN 512, 4 heads),
at each compression rate (fraction of ALL parameters kept; default 0.5 and
0.25) it prunes with

    srp_two_stage     width (P epochs), then fresh importance and q/k, v/o, FFN (P epochs)
    srp_single_stage  everything at once, 2P epochs of shrinking
    oneshot           the same selection as srp_single_stage's, c = 0 at once (no
                      regularization), then the same 2P epochs of KD training
    random            random importance, otherwise srp_single_stage

so every method gets 2P epochs of pruning-time training (with KD from the
unpruned model) and then the same finetune budget (F epochs of plain CE).
Then, for the unpruned model and every final model, it reports test BLEU
(beam 5, BPE removed, tokenized), parameters, FLOPs per target token
(torch flop counter, incremental beam-5 decoding), measured CPU latency at
batch 1 and batch 64 (beam 5, fixed output length, identical work for every
model), the measured speedup and the FLOP-ideal one. ``unpruned_continued``
(the base trained for the same 2P+F extra epochs) is the fair BLEU reference.

Checks printed at the end:
SRP (two- and single-stage) beats oneshot and random at equal size, and the
measured batch-64 speedup reaches >= 0.9 of the FLOP-ideal one.

    python benchmarks/srp_iwslt.py --threads 2                 # the real run (hours on 2 cores)
    python benchmarks/srp_iwslt.py --smoke                     # proves it runs (minutes)
    python benchmarks/srp_iwslt.py --jobs 2 --threads 2        # two 1-thread stages at a time

With ``--jobs N`` the prune/finetune chains and the BLEU evaluations run N at
a time, one thread each (two 1-thread processes train more tokens per second
on 2 cores than one 2-thread process); none of them is timed. The latency
pass at the end always runs alone, with ``--threads`` threads.

Every stage runs as its own ``python -m pet stage=...`` process (what a user
types; thread counts stay per process); finished stages are skipped on a
re-run (their result.json exists). Results: <out>/results.json and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable

from stage_runner import REPO, run_pet_stage, stage_threads  # benchmarks/ is on sys.path when run as a script

SHARED_BPE = REPO.parent / "shared" / "data" / "iwslt14" / "bpe"

# Pretraining follows benchmarks/core_iwslt.py (short warm-up for a CPU budget);
# pruning and finetuning continue at a lower rate with a fresh optimizer.
PRETRAIN = ["optim.lr=1e-3", "optim.warmup_updates=400", "model.dropout=0.1", "trainer.max_tokens=4096"]
def continue_overrides(args: argparse.Namespace) -> list[str]:
    return ["optim.lr=5e-4", f"optim.warmup_updates={args.continue_warmup}", "trainer.max_tokens=4096"]
METHODS = ("srp_two_stage", "srp_single_stage", "oneshot", "random")


def run_stage(args: argparse.Namespace, name: str, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """One pet stage in its own process (benchmarks/stage_runner.py); skipped when done."""
    common = [
        "data=iwslt14_shared", "model=transformer_small",
        f"tracking={args.tracking}", "trainer.progress_bar=none",
        f"paths.output_root={args.out / 'outputs'}", f"trainer.device={args.device}",
    ]
    return run_pet_stage(name, run_dir, [*common, *overrides], stage_threads(args.jobs, args.threads))


def budget(args: argparse.Namespace, epochs: int, updates: int = 0) -> list[str]:
    """An epoch budget, or an update budget when ``updates`` > 0; capped in
    --smoke mode by a handful of updates."""
    if args.smoke:
        return [f"trainer.max_epoch={epochs}", f"trainer.max_update={args.smoke_updates}"]
    if updates > 0:
        return ["trainer.max_epoch=0", f"trainer.max_update={updates}"]
    return [f"trainer.max_epoch={epochs}"]


def period(args: argparse.Namespace, stages: int) -> list[str]:
    """The pruning period of one prune run: P epochs per SRP stage (``stages``
    = 2 for a single-stage run, which gets both stages' budget), or
    --period-updates updates per stage."""
    if args.period_updates > 0:
        return [f"pruning.period_updates={stages * args.period_updates}"]
    return [f"pruning.pruning_period={stages * args.period}"]


def prune_chain(args: argparse.Namespace, method: str, rate: float, base_ckpt: Path) -> Path:
    """Prune + finetune one method at one rate; returns the final checkpoint."""
    root = args.out / f"cr{rate}" / method
    common = [
        "stage=prune", f"pruning.compression_rate={rate}", "pruning.report_latency=false", "pruning.report_bleu=false",
        f"pruning.importance_batches={args.importance_batches}", *continue_overrides(args),
    ]
    shrink = "oneshot" if method == "oneshot" else args.shrink
    if args.smoke:
        common.append(f"trainer.max_update={args.smoke_updates}")
    if method == "srp_two_stage":
        s1 = run_stage(args, f"{method}@{rate}/prune_emb", root / "prune_emb",
                       [*common, f"shrink={shrink}", "pruning=two_stage_1", *period(args, 1), f"init_from={base_ckpt}"])
        pruned = run_stage(args, f"{method}@{rate}/prune_heads_ffn", root / "prune_heads_ffn",
                           [*common, f"shrink={shrink}", "pruning=two_stage_2", *period(args, 1), f"init_from={s1['checkpoint']}"])
    else:
        extra = {"srp_single_stage": [], "oneshot": [], "random": ["pruning.importance=random"]}[method]
        pruned = run_stage(args, f"{method}@{rate}/prune", root / "prune",
                           [*common, f"shrink={shrink}", "pruning=single_stage", *period(args, 2), *extra, f"init_from={base_ckpt}"])
    ft = run_stage(args, f"{method}@{rate}/finetune", root / "finetune",
                   ["stage=finetune", *continue_overrides(args), *budget(args, args.finetune_epochs, args.finetune_updates),
                    f"init_from={pruned['checkpoint']}"])
    return Path(ft["checkpoint"])


def evaluate(args: argparse.Namespace, name: str, ckpt: Path) -> float:
    res = run_stage(args, f"{name}/evaluate", args.out / "eval" / name,
                    ["stage=evaluate", "generation.split=test", "generation.beam=5",
                     f"generation.max_examples={args.eval_sentences}", f"init_from={ckpt}"])
    return float(res["metric"])


def measure_all(args: argparse.Namespace, checkpoints: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Parameters, FLOPs and latency of every model, in this process.

    Latency rounds are interleaved over all models (pet.pruning.report.paired_latency),
    so a change in machine load affects every model alike.
    """
    import torch

    from pet.checkpoint import load_checkpoint, model_from_checkpoint
    from pet.pruning.report import measure, paired_latency

    torch.set_num_threads(args.threads)
    models = {name: model_from_checkpoint(load_checkpoint(ckpt)).eval() for name, ckpt in checkpoints.items()}
    sizes = {name: measure(m, beam=5, length=25) for name, m in models.items()}
    latency = paired_latency(list(models.values()), beam=5, length=25, batch_sizes=tuple(args.batch_sizes),
                             repeats=args.latency_repeats, threads=args.threads)
    out = {}
    for (name, m), ms in zip(sizes.items(), latency):
        out[name] = {"parameters": m.parameters, "flops_per_sentence": m.flops_per_sentence,
                     "flops_per_tgt_token": m.flops_per_tgt_token, "ms_per_sentence": ms}
        print(f"[meas] {name}: {m.parameters:,} params, {m.flops_per_tgt_token / 1e6:.2f} MFLOPs/token, "
              + ", ".join(f"b{bs} {v:.1f} ms/sent" for bs, v in ms.items()), flush=True)
    return out


# Where decoding time goes, by the aten ops the profiler sees (self time).
OP_GROUPS = {
    "matrix products": ("aten::addmm", "aten::mm", "aten::bmm"),
    "attention kernel": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_softmax"),
    "kv cache (append, beam reorder)": ("aten::cat", "aten::index_select", "aten::index"),
    "search over the vocabulary": ("aten::_log_softmax", "aten::topk"),
}


def time_breakdown(model: Any, batch_size: int, threads: int) -> dict[str, float]:
    """Milliseconds per sentence in each OP_GROUPS group (plus "other") for one
    profiled fixed-length pass at ``batch_size``: the FLOP-ideal speedup only
    describes the first group, and this shows how much of the time that is."""
    from torch.profiler import ProfilerActivity, profile

    from pet.analysis.latency import make_batches, measure_latency, synthetic_sentences

    batches = make_batches(synthetic_sentences(batch_size, 25, model.spec.encoder.vocab_size), batch_size)
    measure_latency(model, batches, 5, fixed_length=25, warmup=1, repeats=1, num_threads=threads)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        measure_latency(model, batches, 5, fixed_length=25, warmup=0, repeats=1, num_threads=threads)
    owner = {op: group for group, ops in OP_GROUPS.items() for op in ops}
    out = {group: 0.0 for group in [*OP_GROUPS, "other"]}
    for event in prof.key_averages():
        out[owner.get(event.key, "other")] += event.self_cpu_time_total / 1000.0 / batch_size
    return out


def print_breakdown(args: argparse.Namespace, checkpoints: dict[str, Path], names: list[str]) -> dict[str, dict[str, float]]:
    from pet.checkpoint import load_checkpoint, model_from_checkpoint

    big = max(args.batch_sizes)
    rows = {n: time_breakdown(model_from_checkpoint(load_checkpoint(checkpoints[n])).eval(), big, args.threads) for n in names}
    groups = list(next(iter(rows.values())))
    print(f"\nDecoding time by op group, ms/sentence at batch {big} (profiled, fixed length 25, beam 5); "
          f"x = {names[0]} / model")
    print(f"{'group':<34}" + "".join(f"{n:>22}" for n in names))
    for g in [*groups, "total"]:
        vals = [sum(r.values()) if g == "total" else r[g] for r in rows.values()]
        cells = [f"{v:>22.2f}" if i == 0 else f"{v:>12.2f} (x{vals[0] / max(v, 1e-9):.2f})" for i, v in enumerate(vals)]
        print(f"{g:<34}" + "".join(f"{c:>22}" for c in cells))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "srp_iwslt")
    ap.add_argument("--threads", type=int, default=2, help="threads of the latency pass (and of every stage without --jobs)")
    ap.add_argument("--jobs", type=int, default=1, help="stages run at once, 1 thread each (training and BLEU only)")
    ap.add_argument("--device", default="cpu", help="training device (latency is always measured where the models load: CPU)")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.25])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--period", type=int, default=2, help="P: epochs per SRP stage (single-stage methods get 2P)")
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--period-updates", type=int, default=0,
                    help="> 0: P in optimizer updates instead of epochs (pruning.period_updates, shrink.unit=step)")
    ap.add_argument("--finetune-updates", type=int, default=0, help="> 0: finetune budget in updates instead of epochs")
    ap.add_argument("--continue-warmup", type=int, default=200,
                    help="LR warm-up (updates) of the fresh optimizer in every prune/finetune run")
    ap.add_argument("--base-checkpoint", type=Path, default=None,
                    help="a trained transformer_small on iwslt14_shared (e.g. the core benchmark's) instead of pretraining")
    ap.add_argument("--shrink", default="geometric", choices=["geometric", "arithmetic"])
    ap.add_argument("--importance-batches", type=int, default=32)
    ap.add_argument("--eval-sentences", type=int, default=0, help="0 = the whole test set (6,750)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--latency-repeats", type=int, default=5)
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the profiled op-group breakdown of decoding time (unpruned vs SRP two-stage)")
    ap.add_argument("--no-continued-baseline", action="store_true", help="skip training the unpruned model 2P+F more epochs")
    ap.add_argument("--tracking", default="none", choices=["none", "mlflow"])
    ap.add_argument("--smoke", action="store_true",
                    help="first rate only, a few updates per stage, 20 test sentences: proves the script runs")
    ap.add_argument("--smoke-updates", type=int, default=3)
    args = ap.parse_args()
    if not (SHARED_BPE / "train.de").exists():
        sys.exit(f"IWSLT'14 data not found at {SHARED_BPE}; this benchmark reads ../shared beside the checkout")
    if (args.period_updates > 0) != (args.finetune_updates > 0):
        sys.exit("--period-updates and --finetune-updates go together (one budget unit for every stage)")
    if args.smoke:
        args.out = args.out.with_name(args.out.name + "_smoke") if args.out.name == "srp_iwslt" else args.out
        args.pretrain_epochs, args.period, args.finetune_epochs = 1, 1, 1
        args.eval_sentences, args.latency_repeats, args.importance_batches = 20, 1, 2
        args.batch_sizes = [1, 8]
        args.rates = args.rates[:1]
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    if args.base_checkpoint is not None:
        base_ckpt = args.base_checkpoint.resolve()
        if not base_ckpt.exists():
            sys.exit(f"--base-checkpoint {base_ckpt} does not exist")
    else:
        base = run_stage(args, "pretrain", args.out / "pretrain", ["stage=pretrain", *PRETRAIN, *budget(args, args.pretrain_epochs)])
        base_ckpt = Path(base["checkpoint"])

    def continued_baseline() -> Path:
        cont = run_stage(args, "unpruned_continued", args.out / "unpruned_continued",
                         ["stage=finetune", *continue_overrides(args),
                          *budget(args, 2 * args.period + args.finetune_epochs,
                                  (2 * args.period_updates + args.finetune_updates) if args.period_updates else 0),
                          f"init_from={base_ckpt}"])
        return Path(cont["checkpoint"])

    # Every training run, then every evaluation, N at a time (--jobs).
    trainings: dict[str, Callable[[], Path]] = {}
    if not args.no_continued_baseline:
        trainings["unpruned_continued"] = continued_baseline
    for rate in args.rates:
        for method in args.methods:
            trainings[f"{method}@{rate}"] = partial(prune_chain, args, method, rate, base_ckpt)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        finals: dict[str, Path] = {"unpruned": base_ckpt}
        finals.update(zip(trainings, pool.map(lambda train: train(), trainings.values())))
        bleu = dict(zip(finals, pool.map(lambda item: evaluate(args, *item), finals.items())))
    sizes = measure_all(args, finals)
    ref = sizes["unpruned"]
    rows = {}
    for name in finals:
        s = sizes[name]
        row = {"bleu": bleu[name], **s, "params_kept": s["parameters"] / ref["parameters"],
               "flop_ideal_speedup": ref["flops_per_sentence"] / s["flops_per_sentence"]}
        for bs, ms in s["ms_per_sentence"].items():
            row[f"speedup_b{bs}"] = ref["ms_per_sentence"][bs] / ms
            row[f"speedup_vs_ideal_b{bs}"] = row[f"speedup_b{bs}"] / row["flop_ideal_speedup"]
        rows[name] = row

    checks = {}
    for rate in args.rates:
        got = {m: rows.get(f"{m}@{rate}") for m in METHODS}
        if all(got.values()):
            for srp in ("srp_two_stage", "srp_single_stage"):
                checks[f"{srp} beats oneshot and random @ {rate}"] = got[srp]["bleu"] > max(got["oneshot"]["bleu"], got["random"]["bleu"])
        big = str(max(args.batch_sizes))
        for m, r in got.items():
            if r and r["flop_ideal_speedup"] > 1.01:
                checks[f"{m}@{rate} batch-{big} speedup >= 0.9 of FLOP-ideal"] = r[f"speedup_vs_ideal_b{big}"] >= 0.9

    breakdown_models = ["unpruned", *[f"srp_two_stage@{rate}" for rate in args.rates if f"srp_two_stage@{rate}" in finals]]
    breakdown = print_breakdown(args, finals, breakdown_models) if args.breakdown else {}

    results = {
        "breakdown_ms_per_sentence": breakdown,
        "setup": {"data": "IWSLT'14 de-en, 26.9k-pair training subset", "model": "transformer_small", **{
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}},
        "rows": rows, "checks": checks, "wall_s": time.perf_counter() - started,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))

    bs_cols = [str(b) for b in args.batch_sizes]
    header = f"{'model':<26}{'BLEU':>7}{'params':>12}{'kept':>7}{'MFLOP/tok':>10}{'ideal':>7}" + "".join(
        f"{'ms b' + b:>10}{'x b' + b:>8}{'/ideal':>8}" for b in bs_cols)
    print(f"\nSRP benchmark (IWSLT'14 de-en 26.9k subset, transformer_small, {args.threads} CPU threads)")
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        line = (f"{name:<26}{r['bleu']:>7.2f}{r['parameters']:>12,}{r['params_kept']:>7.3f}"
                f"{r['flops_per_tgt_token'] / 1e6:>10.2f}{r['flop_ideal_speedup']:>7.2f}")
        for b in bs_cols:
            ms = r["ms_per_sentence"][int(b)]
            line += f"{ms:>10.2f}{r[f'speedup_b{b}']:>8.2f}{r[f'speedup_vs_ideal_b{b}']:>8.2f}"
        print(line)
    print()
    for k, ok in checks.items():
        print(f"[{'PASS' if ok else 'FAIL'}] {k}")
    print(f"\nresults: {args.out / 'results.json'} ({results['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
