"""Where a pruned model's CTranslate2 speedup falls short of the FLOP-ideal one.

Decoding time = a part that scales with the matrix-product FLOPs + a floor
that does not (per-step work over the target vocabulary: log-softmax and
beam top-k over ``beam x vocab`` scores; embedding lookups, cache reordering,
per-op overhead). For one model shape and compression rate this times, in
interleaved rounds (the procedure of ``ct2_speed.py``), in CTranslate2
float32 and int8:

* ``unpruned``: the dense model;
* ``pruned``: the same model pruned at random to the rate, units removed
  (odd widths such as 158 or 313, heads of 40 or 23 dimensions);
* ``rounded``: a dense model of the pruned model's mean widths rounded to
  multiples of 8 (about the same FLOPs, kernel-friendly shapes): pruned vs
  rounded shows what the odd widths cost;
* ``floor``: the same layers and vocabularies at width 8 (FFN 8, one 8-wide
  head): close to no matrix-product FLOPs, so its time is the floor.

With the floor ``f`` and the unpruned time ``u``, the best speedup pruning
can give is ``u / (f + (u - f) / ideal)``; the script prints it beside the
measured speedup.

    python benchmarks/ct2_speed_floor.py --model transformer_small --rate 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch
from ct2_speed import load  # benchmarks/ is on sys.path when run as a script
from srp_speed_scaling import pruned_pair
from stage_runner import compose


def dense(model_name: str, vocab: tuple[int, int], seed: int, width: int, ffn: int, heads: int):
    """A random dense model of ``model_name``'s depth with the given widths."""
    from pet.models.spec import spec_from_config
    from pet.models.transformer import TransformerModel

    cfg = compose(["tracking=none", f"model={model_name}",
                   f"model.encoder_embed_dim={width}", f"model.decoder_embed_dim={width}",
                   f"model.encoder_ffn_dim={ffn}", f"model.decoder_ffn_dim={ffn}",
                   f"model.encoder_heads={heads}", f"model.decoder_heads={heads}"])
    torch.manual_seed(seed)
    return TransformerModel(spec_from_config(cfg.model, *vocab)).eval()


def round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8)


def rounded_shape(model_name: str, pruned) -> tuple[int, int, int]:
    """(width, FFN width, heads) of a dense model shaped like ``pruned``: its
    mean residual width over both sides rounded to a multiple of 8 x heads
    (pet's dense heads split the width evenly), its mean FFN width to 8."""
    from pet.export.ctranslate2 import layout

    heads = int(compose(["tracking=none", f"model={model_name}"]).model.encoder_heads)
    lay = layout(pruned)
    sides = [lay["encoder"], lay["decoder"]]
    width = statistics.mean(s["residual_width"] for s in sides)
    ffn = statistics.mean(d for s in sides for d in s["ffn_dims"])
    step = 8 * heads
    return max(step, int(round(width / step)) * step), round8(ffn), heads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="transformer_small")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--vocab", type=int, nargs=2, default=[7984, 6224], metavar=("SRC", "TGT"))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--length", type=int, default=25)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="/tmp/ct2_speed_floor.json")
    args = ap.parse_args()

    from pet.export.speed import export_engines, interleaved_rounds
    from pet.pruning.report import measure

    torch.set_num_threads(args.threads)
    vocab = tuple(args.vocab)
    plain, small = pruned_pair(args.model, args.rate, *vocab, seed=args.seed)
    width, ffn, heads = rounded_shape(args.model, small)
    models = {"unpruned": plain, "pruned": small, "rounded": dense(args.model, vocab, args.seed, width, ffn, heads),
              "floor": dense(args.model, vocab, args.seed, 8, 8, 1)}
    flops = {k: measure(m, beam=args.beam, length=args.length).flops_per_sentence for k, m in models.items()}
    print(f"{args.model} @ rate {args.rate}; rounded: width {width}, FFN {ffn}, {heads} heads; load {load()}; "
          f"threads {args.threads}, repeats {args.repeats}, seed {args.seed}")
    print("  MFLOP/sentence: " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in flops.items()), flush=True)
    engines = ("ct2_float32", "ct2_int8")
    result = {"args": vars(args), "rounded_shape": [width, ffn, heads], "flops_per_sentence": flops,
              "load_start": load(), "sent_per_s": {}}
    with tempfile.TemporaryDirectory(prefix="ct2-floor-") as tmp:
        systems = [s for name, m in models.items() for s in export_engines(m, name, Path(tmp), args.threads, engines)]
        for bs in args.batch_sizes:
            rounds = interleaved_rounds(systems, bs, length=args.length, beam=args.beam, repeats=args.repeats,
                                        threads=args.threads, seed=args.seed, vocab=vocab[0])
            result["sent_per_s"][str(bs)] = {f"{s.name}/{s.engine}": statistics.median(r) for s, r in zip(systems, rounds)}
    result["load_end"] = load()
    ideal = flops["unpruned"] / flops["pruned"]
    print(f"  FLOP-ideal speedup {ideal:.2f}x")
    for bs in args.batch_sizes:
        sps = result["sent_per_s"][str(bs)]
        for e in engines:
            t = {k: 1 / sps[f"{k}/{e}"] for k in models}  # seconds per sentence
            bound = t["unpruned"] / (t["floor"] + (t["unpruned"] - t["floor"]) / ideal)
            measured = t["unpruned"] / t["pruned"]
            result.setdefault("analysis", {})[f"b{bs}/{e}"] = {
                "floor_share_of_unpruned": t["floor"] / t["unpruned"], "speedup_measured": measured,
                "speedup_bound_with_floor": bound, "rounded_over_pruned_speed": t["pruned"] / t["rounded"]}
            print(f"  b{bs:<3d} {e:12s} sent/s: " + ", ".join(f"{k} {sps[f'{k}/{e}']:.2f}" for k in models)
                  + f" | floor {t['floor'] / t['unpruned']:.0%} of unpruned time; speedup measured {measured:.2f}x, "
                  f"bound with that floor {bound:.2f}x ({bound / ideal:.2f} of ideal); rounded dense model "
                  f"{t['pruned'] / t['rounded']:.2f}x the pruned one's speed", flush=True)
    print(f"  load at end {result['load_end']}")
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
