"""Is the importance score informative? One-shot removal with no retraining.

SRP ranks units by −∂L/∂c (the method's criterion). This benchmark asks the question
under every SRP result: at a given compression rate, how much validation NLL
does a trained model lose when the units a criterion picks are switched off
at once (c = 0, no shrinking, no training)? A criterion that knows which
units matter loses less than random scores do. Criteria compared:

    gradient             −∂L/∂c (the default, pruning.importance=gradient)
    gradient_magnitude   |∂L/∂c|  (pruning.importance=gradient_magnitude)
    random               seeded uniform scores (two seeds)

Selection is pet's own (per stream for c_emb, equal count per head for
c_qk/c_vo, one global FFN threshold), with the same rate solver as
``stage=prune pruning=single_stage``. Optionally, ``--per-kind`` repeats the
gradient criterion for one unit kind at a time (random for the others), to
show which kind a criterion gets wrong.

    python benchmarks/srp_importance.py --checkpoint outputs/bench/core_iwslt_s2/pet/checkpoint_last.pt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from stage_runner import REPO, compose  # benchmarks/ is on sys.path when run as a script


def mean_nll(model, batches, pad: int) -> float:
    """Teacher-forced NLL per non-pad target token (pet.pruning.removal's log-probs)."""
    from pet.pruning.removal import teacher_forced_lprobs

    total, tokens = 0.0, 0
    for b in batches:
        target = b.target[b.target.ne(pad)]
        total -= teacher_forced_lprobs(model, b, pad).gather(1, target[:, None]).sum().item()
        tokens += target.numel()
    return total / tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="a trained plain model (e.g. the core benchmark's)")
    ap.add_argument("--data", default="iwslt14_shared", help="the data config the checkpoint was trained on")
    ap.add_argument("--data-root", type=Path, default=REPO / "outputs" / "data")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.75, 0.5, 0.25])
    ap.add_argument("--importance-batches", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--valid-batches", type=int, default=0, help="0 = the whole validation set")
    ap.add_argument("--per-kind", action="store_true", help="also: gradient for one unit kind, random for the rest")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from pet.checkpoint import load_checkpoint, model_from_checkpoint
    from pet.data.batching import eval_batches
    from pet.pruning.gates import dim_ownership, groups_for, set_gates, to_gated
    from pet.pruning.importance import ImportanceContext, gradient_importance, random_importance
    from pet.pruning.selection import select_for_rate
    from pet.stages.common import check_same_vocab, load_data
    from pet.stages.prune_steps import importance_batches as sample_importance_batches

    torch.set_num_threads(args.threads)
    if not args.checkpoint.is_file():
        raise SystemExit(f"{args.checkpoint}: no such checkpoint (train one with benchmarks/core_iwslt.py)")
    # The same sample of training batches stage=prune scores on (pruning.importance_seed).
    cfg = compose(["tracking=none", f"data={args.data}", f"paths.data_root={args.data_root}",
                   f"trainer.max_tokens={args.max_tokens}", f"pruning.importance_batches={args.importance_batches}"])
    data = load_data(cfg)
    ckpt = load_checkpoint(args.checkpoint)
    check_same_vocab(ckpt, data, str(args.checkpoint))
    base = model_from_checkpoint(ckpt).eval()
    pad = data.tgt_dict.pad

    train, valid = data.split("train"), data.split("valid")
    importance_batches = sample_importance_batches(cfg, train)
    valid_batches = [valid.collate(b) for b in eval_batches(valid.src_sizes, valid.tgt_sizes, args.max_tokens)]
    if args.valid_batches:
        valid_batches = valid_batches[: args.valid_batches]

    base_nll = mean_nll(base, valid_batches, pad)
    print(f"{args.checkpoint}: {base.num_parameters():,} parameters, valid NLL {base_nll:.4f} "
          f"({sum(int(b.target.ne(pad).sum()) for b in valid_batches):,} target tokens)", flush=True)

    gated = to_gated(base).eval()
    groups = groups_for(gated, "all")
    own = dim_ownership(gated)
    started = time.perf_counter()
    signed = gradient_importance(ImportanceContext(gated, groups, lambda: importance_batches, padding_idx=pad))
    print(f"importance over {len(importance_batches)} batches: {time.perf_counter() - started:.0f}s", flush=True)
    random1, random2 = (random_importance(ImportanceContext(gated, groups, seed=s)) for s in (1, 2))
    criteria = {
        "gradient": signed,
        "gradient_magnitude": {k: v.abs() for k, v in signed.items()},
        "random (seed 1)": random1,
        "random (seed 2)": random2,
    }
    if args.per_kind:
        for kind in sorted({g.kind for g in groups}):
            criteria[f"gradient for {kind} only"] = {g.name: signed[g.name] if g.kind == kind else random1[g.name] for g in groups}

    def nll_after_removal(scores, rate: float) -> float:
        selection = select_for_rate(own, groups, scores, rate=rate).selection
        model = to_gated(base).eval()
        set_gates(model, selection, 0.0)
        return mean_nll(model, valid_batches, pad)

    print(f"\nvalid NLL right after one-shot removal (unpruned {base_nll:.3f}); lower is better")
    print(f"{'criterion':28s}" + "".join(f"{'rate ' + str(r):>12s}" for r in args.rates))
    for name, scores in criteria.items():
        row = [nll_after_removal(scores, rate) for rate in args.rates]
        print(f"{name:28s}" + "".join(f"{v:12.3f}" for v in row), flush=True)


if __name__ == "__main__":
    main()
