"""Measured vs FLOP-ideal speedup of pruning, as the model grows (CPU).

Decoding time has a part that shrinks with pruning (matrix products, which
scale with the FLOPs) and a part that does not, or barely does: per-step work
over the target vocabulary (log-softmax, beam top-k), the attention kernel
and the KV cache (memory-bound, linear in the kept head dims), and per-op
overhead. The larger the model, the larger the matrix-product share, so
measured/FLOP-ideal should rise with the model's width. This script measures
exactly that: for each model config, it prunes a randomly initialised model
to a compression rate with random importance (speed depends on shapes, not
on weights, because decoding runs a fixed number of steps), removes the
units physically, and times both (beam 5, 25 source and 25 target tokens,
interleaved rounds) at each batch size.

    python benchmarks/srp_speed_scaling.py --models transformer_small transformer_iwslt_de_en
"""

from __future__ import annotations

import argparse

import torch
from srp_iwslt import time_breakdown  # benchmarks/ is on sys.path when run as a script
from stage_runner import compose


def pruned_pair(model_name: str, rate: float, src_vocab: int, tgt_vocab: int, seed: int):
    """(unpruned, physically pruned) models of ``model_name``, random weights and random selection."""
    from pet.models.spec import spec_from_config
    from pet.models.transformer import TransformerModel
    from pet.pruning.gates import dim_ownership, groups_for, set_gates, to_gated
    from pet.pruning.importance import ImportanceContext, random_importance
    from pet.pruning.removal import remove_pruned
    from pet.pruning.selection import select_for_rate

    cfg = compose(["tracking=none", f"model={model_name}"])
    torch.manual_seed(seed)
    plain = TransformerModel(spec_from_config(cfg.model, src_vocab, tgt_vocab)).eval()
    gated = to_gated(plain).eval()
    groups = groups_for(gated, "all")
    scores = random_importance(ImportanceContext(gated, groups, seed=seed))
    selection = select_for_rate(dim_ownership(gated), groups, scores, rate=rate).selection
    set_gates(gated, selection, 0.0)
    return plain, remove_pruned(gated).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["transformer_small", "transformer_iwslt_de_en"])
    ap.add_argument("--rate", type=float, default=0.5, help="fraction of parameters kept")
    ap.add_argument("--vocab", type=int, nargs=2, default=[7984, 6224], metavar=("SRC", "TGT"),
                    help="dictionary sizes (default: the IWSLT'14 subset in ../shared)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--breakdown", action="store_true", help="also profile where the time goes at the largest batch")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from pet.pruning.report import measure, paired_latency

    torch.set_num_threads(args.threads)
    print(f"rate {args.rate}, vocab {args.vocab[0]}/{args.vocab[1]}, beam 5, 25+25 tokens, {args.threads} threads")
    header = f"{'model':26s}{'params':>12s}{'pruned':>12s}{'MFLOP/tok':>16s}{'ideal':>7s}"
    header += "".join(f"{'x b' + str(b):>8s}{'/ideal':>8s}" for b in args.batch_sizes)
    print(header)
    for name in args.models:
        plain, small = pruned_pair(name, args.rate, *args.vocab, seed=args.seed)
        before, after = measure(plain), measure(small)
        ms = paired_latency([plain, small], batch_sizes=tuple(args.batch_sizes), repeats=args.repeats, threads=args.threads)
        ideal = before.flops_per_sentence / after.flops_per_sentence
        row = (f"{name:26s}{before.parameters:>12,}{after.parameters:>12,}"
               f"{before.flops_per_tgt_token / 1e6:>7.2f} ->{after.flops_per_tgt_token / 1e6:>6.2f}{ideal:>7.2f}")
        for b in args.batch_sizes:
            x = ms[0][b] / ms[1][b]
            row += f"{x:>8.2f}{x / ideal:>8.2f}"
        print(row, flush=True)
        if args.breakdown:
            big = max(args.batch_sizes)
            parts = [time_breakdown(m, big, args.threads) for m in (plain, small)]
            for group in parts[0]:
                share = parts[0][group] / sum(parts[0].values())
                print(f"    {group:34s} {parts[0][group]:7.2f} -> {parts[1][group]:6.2f} ms/sent "
                      f"(x{parts[0][group] / max(parts[1][group], 1e-9):.2f}; {share:.0%} of unpruned)", flush=True)


if __name__ == "__main__":
    main()
