"""Converged-scale proof of SRP and PET on IWSLT'14 (26.9k-pair subset), on 2 CPU cores.

Long (many CPU-hours): run it in the background, from a git worktree at a fixed
commit, with its state outside the work tree, so edits to the checkout never
change a running measurement and an interrupted run resumes where it stopped:

    git worktree add ~/.cache/pet-bench/src <commit>
    cd ~/.cache/pet-bench/src && nohup nice -n 19 <venv>/bin/python benchmarks/converged.py \\
        --shared /path/to/shared teachers >> ~/.cache/pet-bench/converged.log 2>&1 &

Phases (each one command; every stage is ``python -m pet ...`` in its own
1-thread process, and a stage whose result.json exists is skipped):

    teachers   transformer_small de->en (SRP's teacher) and en->de (PET's), trained
               until the validation loss stops improving (trainer.patience epochs),
               the last epochs' checkpoints kept for averaging

``--out`` (default ``~/.cache/pet-bench/converged``) holds every run folder,
the prepared data and ``commits.json`` (which commit ran which phase).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stage_runner import REPO, run_pet_stage  # benchmarks/ is on sys.path when run as a script

DEFAULT_OUT = Path.home() / ".cache" / "pet-bench" / "converged"

# The teacher recipe: transformer_small (3+3 layers, d 256, FFN 512, 4 heads)
# with the regularisation a 27k-pair corpus needs (fairseq's IWSLT dropout 0.3),
# a short LR warm-up for a CPU budget, and early stopping on validation loss.
TEACHER = [
    "stage=pretrain", "model=transformer_small", "model.dropout=0.3", "model.attention_dropout=0.1",
    "model.activation_dropout=0.1", "optim.lr=1e-3", "optim.warmup_updates=1000", "trainer.max_tokens=4096",
    "trainer.max_epoch=120", "trainer.patience=6", "trainer.keep_last_epochs=10",
    "trainer.keep_best_checkpoints=5", "trainer.save_interval_updates=250", "trainer.seed=1",
]
DIRECTIONS = {"de_en": "iwslt14_shared", "en_de": "iwslt14_shared_en_de"}

EPOCH_LINE = re.compile(r"end of epoch (\d+) \(update (\d+)\): valid loss ([\d.]+), nll ([\d.]+)")


def common(args: argparse.Namespace) -> list[str]:
    return [
        "tracking=none", "trainer.progress_bar=none", f"trainer.device={args.device}",
        f"paths.output_root={args.out / 'outputs'}", f"paths.shared_data={args.shared / 'data'}",
    ]


def stage(args: argparse.Namespace, name: str, overrides: list[str]) -> dict[str, Any]:
    return run_pet_stage(name, args.out / name, [*common(args), *overrides], threads=1)


def teacher_dir(args: argparse.Namespace, direction: str) -> Path:
    return args.out / f"teacher_{direction}"


def teachers(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {d: pool.submit(stage, args, f"teacher_{d}", [f"data={data}", *TEACHER])
                   for d, data in DIRECTIONS.items()}
        return {d: f.result() for d, f in futures.items()}


def epoch_curve(run_dir: Path) -> list[dict[str, float]]:
    """(epoch, updates, valid loss, valid nll) per completed epoch, from the stage's log."""
    log = run_dir / "stage.log"
    if not log.exists():
        return []
    return [{"epoch": int(m[1]), "updates": int(m[2]), "valid_loss": float(m[3]), "valid_nll": float(m[4])}
            for m in EPOCH_LINE.finditer(log.read_text(errors="replace"))]


def record_commit(args: argparse.Namespace, phase: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    path = args.out / "commits.json"
    seen = json.loads(path.read_text()) if path.exists() else {}
    seen.setdefault(phase, [])
    if commit not in seen[phase]:
        seen[phase].append(commit)
    path.write_text(json.dumps(seen, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["teachers", "status"])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared/ folder with data/iwslt14")
    ap.add_argument("--jobs", type=int, default=2, help="1-thread stages run at once")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    args.out, args.shared = args.out.expanduser().resolve(), args.shared.expanduser().resolve()
    if not (args.shared / "data" / "iwslt14" / "bpe" / "train.de").exists():
        sys.exit(f"IWSLT'14 data not found under {args.shared}/data/iwslt14; pass --shared <folder holding data/>")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase == "status":
        for d in DIRECTIONS:
            curve = epoch_curve(teacher_dir(args, d))
            last = curve[-1] if curve else None
            print(f"teacher_{d}: {len(curve)} epochs" + (f", last {last}" if last else ""))
        return
    record_commit(args, args.phase)
    print(json.dumps(teachers(args), indent=2, default=str))


if __name__ == "__main__":
    main()
