"""Pruning's speedup in pet's eager loop and in CTranslate2 (float32, int8), measured together.

For each model shape and compression rate (fraction of parameters kept), a
randomly initialised model is pruned with random importance and its units are
removed physically (:func:`srp_speed_scaling.pruned_pair`: speed depends on
the shapes, not on the weights, because every sentence is decoded for a
fixed number of steps). Both models are exported to CTranslate2 float32 and
int8, and the six systems (unpruned/pruned x pet eager/CT2 float32/CT2 int8)
are timed round-robin: every round times each system once on the same work
(beam 5, ``length`` source tokens, ``length`` decoder steps; 8 sentences at
batch 1, one full batch otherwise; one untimed pass per system first), so a
change in machine load hits all six alike. The median over rounds is
reported, with the spread (max-min over median) of the rounds.

The FLOP-ideal speedup is ``before.flops_per_sentence /
after.flops_per_sentence`` (:func:`pet.pruning.report.measure`, beam 5,
25 -> 25 tokens); each engine's measured speedup is divided by it.

    python benchmarks/ct2_speed.py --repeats 5 --out /tmp/ct2_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from srp_speed_scaling import pruned_pair  # benchmarks/ is on sys.path when run as a script

from pet.export.speed import interleaved_rounds

ENGINE_LABELS = {"pet": "pet eager", "ct2_float32": "CT2 float32", "ct2_int8": "CT2 int8"}


def load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def measure_case(model_name: str, rate: float, args) -> dict:
    """Sentences/s of the six systems of one shape and rate, and the speedups."""
    from pet.export.speed import ENGINES, export_engines
    from pet.pruning.report import measure

    plain, small = pruned_pair(model_name, rate, *args.vocab, seed=args.seed)
    before, after = measure(plain, beam=args.beam, length=args.length), measure(small, beam=args.beam, length=args.length)
    ideal = before.flops_per_sentence / after.flops_per_sentence
    case = {
        "model": model_name, "rate": rate,
        "parameters": {"unpruned": before.parameters, "pruned": after.parameters},
        "flops_per_sentence": {"unpruned": before.flops_per_sentence, "pruned": after.flops_per_sentence},
        "flop_ideal_speedup": ideal, "load_start": load(),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ct2-speed-") as tmp:
        systems = (export_engines(plain, "unpruned", Path(tmp), args.threads, ENGINES)
                   + export_engines(small, "pruned", Path(tmp), args.threads, ENGINES))
        case["mb_on_disk"] = {f"{s.name}/{s.engine}": s.bytes_on_disk / 2**20
                              for s in systems if s.bytes_on_disk is not None}
        per_batch = {}
        for bs in args.batch_sizes:
            rounds = interleaved_rounds(systems, bs, length=args.length, beam=args.beam, repeats=args.repeats,
                                        threads=args.threads, seed=args.seed)
            per_batch[bs] = {f"{s.name}/{s.engine}": r for s, r in zip(systems, rounds)}
    case["seconds"] = time.perf_counter() - started
    case["load_end"] = load()
    case["rounds_sent_per_s"] = {str(bs): v for bs, v in per_batch.items()}
    sps = {str(bs): {k: statistics.median(v) for k, v in d.items()} for bs, d in per_batch.items()}
    case["sent_per_s"] = sps
    case["spread"] = {str(bs): {k: (max(v) - min(v)) / statistics.median(v) for k, v in d.items()}
                      for bs, d in per_batch.items()}
    case["speedup"] = {str(bs): {e: sps[str(bs)][f"pruned/{e}"] / sps[str(bs)][f"unpruned/{e}"] for e in ENGINES}
                       for bs in args.batch_sizes}
    case["speedup_over_ideal"] = {bs: {e: x / ideal for e, x in d.items()} for bs, d in case["speedup"].items()}
    # Load only ever slows a round down: the fastest round of each system is a second, less noisy estimate.
    best = {str(bs): {k: max(v) for k, v in d.items()} for bs, d in per_batch.items()}
    case["best_round_sent_per_s"] = best
    case["best_round_speedup"] = {str(bs): {e: best[str(bs)][f"pruned/{e}"] / best[str(bs)][f"unpruned/{e}"]
                                            for e in ENGINES} for bs in args.batch_sizes}
    return case


def print_case(case: dict, batch_sizes) -> None:
    from pet.export.speed import ENGINES

    p = case["parameters"]
    print(f"\n{case['model']} @ rate {case['rate']}: {p['unpruned']:,} -> {p['pruned']:,} parameters, "
          f"FLOP-ideal speedup {case['flop_ideal_speedup']:.2f}x; {case['seconds']:.0f}s, "
          f"load {case['load_start']} -> {case['load_end']}")
    head = f"  {'engine':12s}"
    for bs in batch_sizes:
        head += f" | b{bs}: {'unpruned':>9s} {'pruned':>9s} {'spread':>13s} {'speedup':>7s} {'/ideal':>6s}"
    print(head + "   (sentences/s)")
    for e in ENGINES:
        row = f"  {ENGINE_LABELS[e]:12s}"
        for bs in batch_sizes:
            s, sp = case["sent_per_s"][str(bs)], case["spread"][str(bs)]
            row += (f" | {'':4s}{s[f'unpruned/{e}']:>9.2f} {s[f'pruned/{e}']:>9.2f} "
                    f"{sp[f'unpruned/{e}']:>6.0%}/{sp[f'pruned/{e}']:>5.0%} "
                    f"{case['speedup'][str(bs)][e]:>6.2f}x {case['speedup_over_ideal'][str(bs)][e]:>6.2f}")
        print(row)
    print("  fastest rounds' speedup: " + "; ".join(
        f"{ENGINE_LABELS[e]} " + ", ".join(f"b{bs} {case['best_round_speedup'][str(bs)][e]:.2f}x "
                                          f"({case['best_round_speedup'][str(bs)][e] / case['flop_ideal_speedup']:.2f} "
                                          "of ideal)" for bs in batch_sizes) for e in ENGINES))
    mb = case["mb_on_disk"]
    print("  on disk (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in mb.items()), flush=True)


def summary(cases: list[dict], big: int) -> list[dict]:
    """The two targets per shape: pruned(0.5) CT2 int8 vs unpruned pet eager at
    batch ``big`` (>= 3x), and measured/FLOP-ideal in CT2 at ``big`` (>= 0.9)."""
    rows = []
    for c in cases:
        s = c["sent_per_s"][str(big)]
        rows.append({
            "model": c["model"], "rate": c["rate"],
            "pruned_int8_over_unpruned_pet": s["pruned/ct2_int8"] / s["unpruned/pet"],
            "unpruned_int8_over_unpruned_pet": s["unpruned/ct2_int8"] / s["unpruned/pet"],
            "ct2_float32_over_ideal": c["speedup_over_ideal"][str(big)]["ct2_float32"],
            "ct2_int8_over_ideal": c["speedup_over_ideal"][str(big)]["ct2_int8"],
            "pet_over_ideal": c["speedup_over_ideal"][str(big)]["pet"],
            "best_round_pruned_int8_over_unpruned_pet": (c["best_round_sent_per_s"][str(big)]["pruned/ct2_int8"]
                                                         / c["best_round_sent_per_s"][str(big)]["unpruned/pet"]),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["transformer_small", "transformer_iwslt_de_en"])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.25], help="fractions of parameters kept")
    ap.add_argument("--vocab", type=int, nargs=2, default=[7984, 6224], metavar=("SRC", "TGT"),
                    help="dictionary sizes (default: the IWSLT'14 subset in ../shared)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--length", type=int, default=25)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="/tmp/ct2_speed.json")
    args = ap.parse_args()

    import ctranslate2

    torch.set_num_threads(args.threads)
    start_load = load()
    print(f"load (1/5/15 min) at start {start_load}; {os.cpu_count()} CPUs; threads {args.threads}, "
          f"repeats {args.repeats} (interleaved rounds), seed {args.seed}, beam {args.beam}, "
          f"{args.length}+{args.length} tokens, vocab {args.vocab[0]}/{args.vocab[1]}, "
          f"torch {torch.__version__}, ctranslate2 {ctranslate2.__version__}", flush=True)
    cases = []
    for name in args.models:
        for rate in args.rates:
            cases.append(measure_case(name, rate, args))
            print_case(cases[-1], args.batch_sizes)
    big = max(args.batch_sizes)
    rows = summary(cases, big)
    print(f"\nat batch {big}:")
    print(f"  {'model':26s}{'rate':>6s}{'pruned int8/pet unpruned':>26s}{'unpruned int8/pet':>19s}"
          f"{'CT2 f32 /ideal':>16s}{'CT2 int8 /ideal':>17s}{'pet /ideal':>12s}")
    for r in rows:
        print(f"  {r['model']:26s}{r['rate']:>6.2f}{r['pruned_int8_over_unpruned_pet']:>25.2f}x"
              f"{r['unpruned_int8_over_unpruned_pet']:>18.2f}x{r['ct2_float32_over_ideal']:>16.2f}"
              f"{r['ct2_int8_over_ideal']:>17.2f}{r['pet_over_ideal']:>12.2f}"
              f"   (fastest rounds: int8 pruned/pet unpruned {r['best_round_pruned_int8_over_unpruned_pet']:.2f}x)")
    end_load = load()
    print(f"targets: pruned(0.5) int8 vs pet eager unpruned >= 3x; CT2 measured/FLOP-ideal >= 0.9\n"
          f"load (1/5/15 min) at end {end_load}", flush=True)
    out = {"args": vars(args), "cpus": os.cpu_count(), "torch": torch.__version__,
           "ctranslate2": ctranslate2.__version__, "load_start": start_load, "load_end": end_load,
           "cases": cases, f"summary_b{big}": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
