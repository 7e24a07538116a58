"""BLEU of a trained model in pet and exported to CTranslate2 float32 and int8.

Runs the stages a user would, one ``python -m pet`` process each, in
``--work`` (a stage whose ``result.json`` exists is skipped, so a stopped
run resumes):

1. ``stage=evaluate`` of the checkpoint on the test split (the first
   ``--sentences``, or all): pet's tokenized BLEU and sacreBLEU, and the raw
   references it scored against (``ref.raw.txt``);
2. ``stage=export`` as float32 and as int8 (each checked against pet's beam
   search on validation sentences; no speed measurement);
3. ``stage=translate`` of the same raw test sources with pet (checkpoint) and
   with CTranslate2: the float32 folder, the int8 folder as it loads by
   default (int8 matrix products) and the int8 folder computed in float32
   (``translate.compute_type=float32``: the error of the stored weights alone);
4. sacreBLEU of every output against ``ref.raw.txt`` with the ``sacrebleu``
   command line (``-lc`` when evaluate scored case-insensitively, i.e. for a
   lowercased model), and how many translations are identical to float32's.

    python benchmarks/ct2_int8_bleu.py --checkpoint /tmp/ct2demo/runs/demo/<..>/finetune/checkpoint_best.pt \\
        --source /tmp/ct2demo/data/demo/raw/test.de --work /tmp/ct2_int8_bleu/demo -- paths.output_root=/tmp/ct2demo

Everything after ``--`` is passed to every stage (data paths and the like).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from stage_runner import run_pet_stage  # benchmarks/ is on sys.path when run as a script

# (name, init_from kind, overrides) of each translation
SYSTEMS = (
    ("pet", "checkpoint", ["translate.backend=pet"]),
    ("ct2_float32", "float32", ["translate.backend=ctranslate2"]),
    ("ct2_int8", "int8", ["translate.backend=ctranslate2"]),
    ("ct2_int8_weights_float32_compute", "int8", ["translate.backend=ctranslate2", "translate.compute_type=float32"]),
)


def sacrebleu_cli(ref: Path, hyp: Path, lowercase: bool) -> dict:
    """``sacrebleu ref -i hyp -m bleu -b -w 2 [-lc]`` as the command line scores it."""
    cmd = [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", "bleu", "-w", "2", "-f", "json"]
    if lowercase:
        cmd.append("-lc")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out)
    return {"sacrebleu": float(res["score"]), "signature": res["signature"], "verbose": res.get("verbose_score")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a trained pet checkpoint (.pt)")
    ap.add_argument("--source", required=True, help="the raw test sources, one sentence a line (the test split's order)")
    ap.add_argument("--work", required=True, help="folder for the stages' runs and the outputs")
    ap.add_argument("--sentences", type=int, default=0, help="the first n test sentences (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-sentences", type=int, default=100, help="export.check_sentences")
    ap.add_argument("--out", default=None, help="JSON results (default: <work>/ct2_int8_bleu.json)")
    ap.add_argument("overrides", nargs="*", help="pet overrides for every stage (after --)")
    args = ap.parse_args()

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ckpt = str(Path(args.checkpoint).resolve())
    common = ["tracking=none", "trainer.progress_bar=none", *args.overrides]
    print(f"load (1/5/15 min) at start {[round(x, 2) for x in os.getloadavg()]}; threads {args.threads}", flush=True)

    ev = run_pet_stage("evaluate", work / "evaluate", [
        *common, "stage=evaluate", f"init_from={ckpt}", "generation.split=test",
        f"generation.max_examples={args.sentences}"], args.threads)
    ref = work / "evaluate" / "ref.raw.txt"
    refs = ref.read_text(encoding="utf-8").splitlines()
    sources = Path(args.source).read_text(encoding="utf-8").splitlines()[:len(refs)]
    if len(sources) != len(refs):
        sys.exit(f"{args.source} has {len(sources)} lines, fewer than evaluate's {len(refs)} references")
    src = work / f"source.{len(sources)}.txt"
    src.write_text("\n".join(sources) + "\n", encoding="utf-8")
    lowercase = "case:lc" in str(ev["metrics"].get("sacrebleu_signature") or "")

    folders = {"checkpoint": ckpt}
    exports = {}
    for q in ("float32", "int8"):
        folders[q] = str(work / f"ct2-{q}")
        exports[q] = run_pet_stage(f"export {q}", work / f"export-{q}", [
            *common, "stage=export", f"init_from={ckpt}", f"export.quantization={q}", f"export.dir={folders[q]}",
            "export.measure_speed=false", f"export.check_sentences={args.check_sentences}"], args.threads)["metrics"]

    rows = {"pet evaluate (BPE'd test split)": {"sacrebleu": ev["metrics"].get("sacrebleu"),
                                                 "tok_bleu": ev["metrics"]["bleu"]}}
    outputs = {}
    for name, kind, overrides in SYSTEMS:
        hyp = work / f"hyp.{name}.txt"
        res = run_pet_stage(f"translate {name}", work / f"translate-{name}", [
            *common, "stage=translate", f"init_from={folders[kind]}", f"translate.input={src}",
            f"translate.output={hyp}", *overrides], args.threads)
        outputs[name] = hyp.read_text(encoding="utf-8").splitlines()
        rows[name] = {**sacrebleu_cli(ref, hyp, lowercase), "sentences_per_s": res["metrics"]["sentences_per_s"]}
    base = outputs["ct2_float32"]
    for name, lines in outputs.items():
        rows[name]["identical_to_ct2_float32"] = sum(a == b for a, b in zip(lines, base)) / len(base)
    evaluate_hyp = (work / "evaluate" / "hyp.detok.txt").read_text(encoding="utf-8").splitlines()
    translate_vs_evaluate = sum(a == b for a, b in zip(outputs["pet"], evaluate_hyp)) / len(evaluate_hyp)

    print(f"\n{args.checkpoint}: {len(refs)} test sentences, sacreBLEU {'-lc ' if lowercase else ''}"
          f"against evaluate's ref.raw.txt; {ev['metrics'].get('parameters'):,} parameters")
    print(f"  {'system':34s}{'sacreBLEU':>10s}{'vs f32':>8s}{'same as f32':>13s}{'sent/s':>8s}")
    f32 = rows["ct2_float32"]["sacrebleu"]
    for name, r in rows.items():
        same = r.get("identical_to_ct2_float32")
        line = f"  {name:34s}{r['sacrebleu']:>10.2f}{r['sacrebleu'] - f32:>+8.2f}"
        line += f"{same:>13.1%}" if same is not None else f"{'':13s}"
        line += f"{r['sentences_per_s']:>8.1f}" if "sentences_per_s" in r else ""
        print(line)
    print(f"  pet evaluate tokenized BLEU {ev['metrics']['bleu']:.2f}; pet translate == evaluate's hyp.detok.txt "
          f"on {translate_vs_evaluate:.1%} of lines")
    for q, m in exports.items():
        keys = ("share_identical", "quantized_share_identical", "quantized_weights_share_identical", f"ct2_{q}_mb")
        print(f"  export {q} (check on {m.get('check_sentences')} valid sentences vs pet): "
              + ", ".join(f"{k} {m[k]:.3f}" for k in keys if m.get(k) is not None))
    print(f"  signature: {rows['ct2_float32']['signature']}")
    print(f"load (1/5/15 min) at end {[round(x, 2) for x in os.getloadavg()]}")
    out = Path(args.out) if args.out else work / "ct2_int8_bleu.json"
    out.write_text(json.dumps({"checkpoint": args.checkpoint, "sentences": len(refs), "lowercase": lowercase,
                               "rows": rows, "exports": exports, "pet_translate_equals_evaluate": translate_vs_evaluate},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
