"""Core benchmark: pet vs fairseq, same data, shape, hyperparameters and wall clock.

Trains ``transformer_small`` (256 wide, 3+3 layers, FFN 512, 4 heads) on the
IWSLT'14 de-en 26.9k-pair training subset in ../shared for a fixed wall-clock
budget on N CPU threads, then reports train target tokens/s, validation loss
(base 2, as fairseq prints it), test BLEU (beam 5, BPE removed, tokenized) and
decoding sentences/s — for pet and, side by side, for fairseq (the PyPI sdist
``fairseq-fixed`` 0.12.3.1 installed in its own virtual environment; never
vendored). Prints a table with the pet/fairseq ratios and writes it as JSON.

    python benchmarks/core_iwslt.py --minutes 10 --threads 2 --fairseq-venv /path/to/fairseq-venv
    python benchmarks/core_iwslt.py --minutes 1 --skip-fairseq      # smoke run

Not a test: it takes (2 x budget) + decoding time. Run it on an otherwise idle
machine; the numbers it prints are the ones to report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_BPE = REPO.parent / "shared" / "data" / "iwslt14" / "bpe"

# One set of hyperparameters for both systems. The warm-up is shorter than the
# IWSLT recipe's 4,000 updates because a CPU budget of minutes sees only a few
# hundred updates; everything else is the recipe.
HPARAMS = dict(lr=1e-3, warmup=400, dropout=0.1, wd=1e-4, ls=0.1, max_tokens=4096, seed=1)


def run(cmd: list[str], log: Path, env: dict | None = None) -> str:
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, text=True)
    text = log.read_text()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}) after {time.perf_counter() - started:.0f}s; see {log}\n{text[-3000:]}")
    return text


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def pet_common(out: Path, threads: int) -> list[str]:
    """Overrides every pet command of this benchmark shares."""
    return [
        "data=iwslt14_shared",
        "model=transformer_small",
        "tracking=none",
        f"trainer.num_threads={threads}",
        "trainer.progress_bar=none",
        f"paths.output_root={out / 'pet_outputs'}",
    ]


def pet_evaluate(out: Path, threads: int, checkpoint: Path, name: str, max_sentences: int = 0) -> dict:
    """``pet stage=evaluate`` on the test set; its metrics (BLEU, sacreBLEU, speed)."""
    eval_dir = out / name
    run(
        [sys.executable, "-m", "pet", "stage=evaluate", f"paths.run_dir={eval_dir}", f"init_from={checkpoint}"]
        + pet_common(out, threads)
        + [f"generation.max_examples={max_sentences}"],
        out / f"{name}.log",
        thread_env(threads),
    )
    return json.loads((eval_dir / "result.json").read_text())["metrics"]


def bench_pet(out: Path, minutes: float, threads: int, max_sentences_eval: int) -> dict:
    pet = [sys.executable, "-m", "pet"]
    run_dir = out / "pet"
    common = pet_common(out, threads)
    h = HPARAMS
    run(
        pet
        + ["stage=pretrain", f"paths.run_dir={run_dir}", "trainer.reset=true"]
        + common
        + [
            f"optim.lr={h['lr']}",
            f"optim.warmup_updates={h['warmup']}",
            f"model.dropout={h['dropout']}",
            f"optim.weight_decay={h['wd']}",
            f"optim.label_smoothing={h['ls']}",
            f"trainer.max_tokens={h['max_tokens']}",
            f"trainer.seed={h['seed']}",
            f"trainer.max_time_minutes={minutes}",
        ],
        out / "pet_train.log",
        thread_env(threads),
    )
    result = json.loads((run_dir / "result.json").read_text())
    m = result["metrics"]
    ev = pet_evaluate(out, threads, run_dir / "checkpoint_last.pt", "pet_eval", max_sentences_eval)
    return {
        "train_tokens_per_s": m["train_tokens_per_s"],
        "updates": m["num_updates"],
        "valid_loss": m["last_valid_loss"],
        "test_bleu": ev["bleu"],
        "sacrebleu": ev["sacrebleu"],
        "decode_sentences_per_s": ev["sentences_per_s"],
        "parameters": m["parameters"],
        "log": str(out / "pet_train.log"),
    }


def bench_fairseq(out: Path, minutes: float, threads: int, venv: Path, reuse_training: bool = False) -> dict:
    bin_dir = venv / "bin"
    if not (bin_dir / "fairseq-train").exists():
        sys.exit(
            f"fairseq not found in {venv}. Install it there: python3 -m venv {venv} && "
            f"{bin_dir}/pip install torch==2.13.0 cython numpy && "
            f"{bin_dir}/pip install --no-build-isolation fairseq-fixed==0.12.3.1"
        )
    env = thread_env(threads)
    # fairseq 0.12 pickles argparse.Namespace into its checkpoints, which torch
    # >= 2.6 refuses to load by default (weights_only=True).
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    data_bin = out / "fairseq_data"
    if not (data_bin / "train.de-en.de.bin").exists():
        run(
            [str(bin_dir / "fairseq-preprocess"), "--source-lang", "de", "--target-lang", "en",
             "--trainpref", str(SHARED_BPE / "train"), "--validpref", str(SHARED_BPE / "valid"),
             "--testpref", str(SHARED_BPE / "test"), "--destdir", str(data_bin), "--workers", str(threads)],
            out / "fairseq_preprocess.log", env,
        )
    save_dir = out / "fairseq_ckpt"
    h = HPARAMS
    if reuse_training and (save_dir / "checkpoint_last.pt").exists():
        train_log = (out / "fairseq_train.log").read_text()
    else:
        train_log = run(
            [str(bin_dir / "fairseq-train"), str(data_bin), "--arch", "transformer",
             "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
             "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
             "--encoder-layers", "3", "--decoder-layers", "3",
             "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
             "--share-decoder-input-output-embed",
             "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", str(h["lr"]),
             "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(h["warmup"]),
             "--weight-decay", str(h["wd"]), "--dropout", str(h["dropout"]),
             "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", str(h["ls"]),
             "--max-tokens", str(h["max_tokens"]), "--seed", str(h["seed"]),
             "--stop-time-hours", str(minutes / 60), "--save-dir", str(save_dir),
             "--no-epoch-checkpoints", "--cpu", "--num-workers", "0",
             "--log-format", "simple", "--log-interval", "50"],
            out / "fairseq_train.log", env,
        )
    train_lines = [l for l in train_log.splitlines() if "| train |" in l or "train_inner" in l]
    valid_losses = [float(x) for x in re.findall(r"\| valid \|.*?\| loss ([\d.]+)", train_log)]
    updates = [int(x) for x in re.findall(r"num_updates (\d+)", train_log)]
    gen = [str(bin_dir / "fairseq-generate"), str(data_bin), "--path", str(save_dir / "checkpoint_last.pt"),
           "--beam", "5", "--remove-bpe", "--batch-size", "128", "--cpu", "--gen-subset", "test",
           "--max-len-a", "1.2", "--max-len-b", "10"]
    started = time.perf_counter()
    gen_log = run(gen, out / "fairseq_generate.log", env)
    gen_seconds = time.perf_counter() - started
    bleu = float(re.search(r"BLEU4 = ([\d.]+)", gen_log).group(1))
    sents = re.search(r"Translated ([\d,]+) sentences.*?in ([\d.]+)s \(([\d.]+) sentences/s", gen_log)
    # Throughput over time spent in updates, like pet's train_tokens_per_s:
    # each epoch summary gives its average target tokens per batch (wpb), the
    # cumulative update count and that epoch's own train_wall.
    summary = re.findall(r"\| train \|.*?\| wpb ([\d.]+).*?\| num_updates (\d+).*?\| train_wall (\d+)", train_log)
    tokens = seconds = 0.0
    previous_updates = 0
    for wpb, cumulative, wall in summary:
        tokens += float(wpb) * (int(cumulative) - previous_updates)
        seconds += float(wall)
        previous_updates = int(cumulative)
    return {
        "train_tokens_per_s": tokens / seconds if seconds else None,
        "updates": max(updates) if updates else None,
        "valid_loss": valid_losses[-1] if valid_losses else None,
        "test_bleu": bleu,
        "decode_sentences_per_s": float(sents.group(3)) if sents else None,
        "generate_wall_s": gen_seconds,
        "train_log_lines": len(train_lines),
        "log": str(out / "fairseq_train.log"),
    }


def pet_search_on_fairseq_weights(out: Path, threads: int) -> dict:
    """fairseq's trained model decoded and scored by pet (converted checkpoint):
    separates a BLEU gap between the systems into search vs trained weights."""
    from fairseq_checkpoint import convert  # benchmarks/ is on sys.path when run as a script

    sys.path.insert(0, str(REPO))
    from pet.checkpoint import save_checkpoint

    corpus = out / "pet_outputs" / "data" / "iwslt14_shared"
    converted = out / "fairseq_as_pet.pt"
    save_checkpoint(convert(out / "fairseq_ckpt" / "checkpoint_last.pt", corpus, "de", "en"), converted)
    ev = pet_evaluate(out, threads, converted, "fairseq_weights_pet_eval")
    return {"test_bleu": ev["bleu"], "sacrebleu": ev["sacrebleu"], "decode_sentences_per_s": ev["sentences_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget per system")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "core_iwslt")
    ap.add_argument("--fairseq-venv", type=Path, default=Path(os.environ.get("FAIRSEQ_VENV", REPO.parent / "fairseq-venv")))
    ap.add_argument("--skip-fairseq", action="store_true")
    ap.add_argument("--skip-pet", action="store_true")
    ap.add_argument("--max-eval-sentences", type=int, default=0, help="pet only; 0 = the whole test set (6,750)")
    ap.add_argument("--reuse-training", action="store_true", help="fairseq: decode an existing checkpoint_last.pt again")
    ap.add_argument("--seed", type=int, default=HPARAMS["seed"], help="training seed of both systems")
    args = ap.parse_args()
    if not (SHARED_BPE / "train.de").exists():
        sys.exit(f"IWSLT'14 data not found at {SHARED_BPE}; this benchmark reads ../shared beside the checkout")
    args.out.mkdir(parents=True, exist_ok=True)
    HPARAMS["seed"] = args.seed
    results: dict[str, dict] = {}
    if not args.skip_pet:
        results["pet"] = bench_pet(args.out, args.minutes, args.threads, args.max_eval_sentences)
    if not args.skip_fairseq:
        results["fairseq"] = bench_fairseq(args.out, args.minutes, args.threads, args.fairseq_venv, args.reuse_training)
        if not args.skip_pet:
            results["fairseq_weights_pet_search"] = pet_search_on_fairseq_weights(args.out, args.threads)
    results["setup"] = {"minutes": args.minutes, "threads": args.threads, **HPARAMS,
                        "data": "IWSLT'14 de-en, 26.9k-pair training subset"}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    keys = ["train_tokens_per_s", "updates", "valid_loss", "test_bleu", "decode_sentences_per_s"]
    print(f"\ncore benchmark: transformer_small, {args.minutes} min wall clock, {args.threads} threads")
    print(f"{'metric':<24}" + "".join(f"{k:>12}" for k in ("pet", "fairseq", "pet/fairseq")))
    for k in keys:
        p = results.get("pet", {}).get(k)
        f = results.get("fairseq", {}).get(k)
        ratio = f"{p / f:.3f}" if isinstance(p, (int, float)) and isinstance(f, (int, float)) and f else "-"
        def fmt(v):
            return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        print(f"{k:<24}{fmt(p):>12}{fmt(f):>12}{ratio:>12}")
    cross = results.get("fairseq_weights_pet_search")
    if cross:
        print(f"fairseq's weights decoded by pet: BLEU {cross['test_bleu']:.2f} (fairseq-generate: "
              f"{results['fairseq']['test_bleu']:.2f}), {cross['decode_sentences_per_s']:.1f} sentences/s")
    print(f"results: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
