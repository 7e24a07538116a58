"""The tables of benchmarks/converged.py: teachers, SRP, PET, and speed.

Reads what ``converged.py run`` left under ``--out`` (every final model's
test-set evaluation in ``eval/<task>/result.json``, the teachers' epoch
curves) and writes ``report.md`` and ``report.json`` there. Tasks not finished
yet are shown as missing, so the report can be read at any point of the run.
With ``--measure`` it also times the teacher and the two-stage pruned models
in pet's eager loop and in CTranslate2 (float32, int8) at batch 1 and 64,
interleaved: run that on an otherwise idle machine.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any, Optional

# Tokenized BLEU of fairseq's transformer_iwslt_de_en on the full IWSLT'14
# de->en training set (160k pairs), as commonly reported; the benchmark trains
# the smaller transformer_small on a 26.9k-pair subset, so it is a ceiling, not a target.
FAIRSEQ_DE_EN = "34.4-35.3"


def _result(out: Path, name: str) -> Optional[dict[str, Any]]:
    path = out / "eval" / name / "result.json"
    return json.loads(path.read_text())["metrics"] if path.exists() else None


def _fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f} (n={len(values)})"


def teacher_rows(out: Path, epoch_curve) -> list[dict[str, Any]]:
    rows = []
    for name in ("teacher_de_en", "teacher_en_de", "tiny_teacher_en_de"):
        curve = epoch_curve(out / name)
        res = _result(out, name) or {}
        best = min(curve, key=lambda c: c["valid_loss"]) if curve else None
        rows.append({
            "model": name, "epochs": len(curve), "updates": curve[-1]["updates"] if curve else 0,
            "best_valid_loss": best["valid_loss"] if best else None, "bleu": res.get("bleu"),
            "sacrebleu": res.get("sacrebleu"), "parameters": res.get("parameters"),
            "curve": [(c["epoch"], round(c["valid_loss"], 4)) for c in curve],
        })
    return rows


def srp_rows(out: Path, seeds, rates, methods) -> list[dict[str, Any]]:
    rows = []
    for method in (*methods, "dense"):
        for rate in rates:
            found = [r for s in seeds if (r := _result(out, f"srp/{method}@{rate}/seed{s}"))]
            rows.append({"method": method, "rate": rate, "seeds": len(found),
                         "bleu": [r["bleu"] for r in found], "sacrebleu": [r.get("sacrebleu") for r in found
                                                                          if r.get("sacrebleu") is not None],
                         "parameters": found[0]["parameters"] if found else None})
    return rows


def pet_rows(out: Path, seeds, methods) -> list[dict[str, Any]]:
    rows = []
    for method in methods:
        found = [r for s in seeds if (r := _result(out, f"pet/{method}/seed{s}"))]
        rows.append({"method": method, "seeds": len(found), "bleu": [r["bleu"] for r in found],
                     "sacrebleu": [r["sacrebleu"] for r in found if r.get("sacrebleu") is not None],
                     "parameters": found[0]["parameters"] if found else None})
    return rows


def measure_speed(out: Path, rates, threads: int, repeats: int) -> list[dict[str, Any]]:
    """The teacher and each rate's two-stage pruned model (seed 1), in pet eager
    and CTranslate2 float32/int8, interleaved; FLOP-ideal speedups beside."""
    from pet.checkpoint import load_checkpoint, model_from_checkpoint
    from pet.export.speed import engine_latency, export_engines
    from pet.pruning.report import measure

    names = {"teacher": out / "teacher_de_en" / "checkpoint_best.pt"}
    for rate in rates:
        result = out / f"srp/two_stage@{rate}/seed1/finetune/result.json"
        if result.exists():
            names[f"two_stage@{rate}"] = Path(json.loads(result.read_text())["checkpoint"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="pet-converged-") as tmp:
        systems, flops = [], {}
        for name, path in names.items():
            if not path.exists():
                continue
            ckpt = load_checkpoint(path)
            model = model_from_checkpoint(ckpt).eval()
            flops[name] = measure(model).flops_per_sentence
            systems += export_engines(model, name, Path(tmp), threads, src_symbols=ckpt["src_dict"],
                                      tgt_symbols=ckpt["tgt_dict"])
        load_before = os.getloadavg()[0]
        speeds = engine_latency(systems, batch_sizes=(1, 64), repeats=repeats, threads=threads)
        load_after = os.getloadavg()[0]
    base = {s.engine: v for s, v in zip(systems, speeds) if s.name == "teacher"}
    for s, v in zip(systems, speeds):
        ideal = flops["teacher"] / flops[s.name]
        row = {"model": s.name, "engine": s.engine, "flop_ideal": ideal, "mb": s.bytes_on_disk / 2**20 if s.bytes_on_disk else None,
               "load": [load_before, load_after], "threads": threads, "repeats": repeats}
        for bs in (1, 64):
            row[f"sent_per_s_b{bs}"] = v[bs]
            row[f"speedup_b{bs}"] = v[bs] / base[s.engine][bs]
        row["vs_pet_eager_teacher_b64"] = v[64] / base["pet"][64]
        rows.append(row)
    return rows


def markdown(teachers, srp, pet, speed) -> str:
    lines = ["## Teachers (test set, beam 5)", "",
             "| model | epochs | updates | best valid loss | BLEU | sacreBLEU | parameters |", "|---|---|---|---|---|---|---|"]
    for t in teachers:
        lines.append(f"| {t['model']} | {t['epochs']} | {t['updates']} | {t['best_valid_loss'] or '-'} | "
                     f"{_fmt([t['bleu']] if t['bleu'] is not None else [])} | "
                     f"{_fmt([t['sacrebleu']] if t['sacrebleu'] is not None else [])} | {t['parameters'] or '-'} |")
    lines += ["", f"fairseq transformer_iwslt_de_en on the full 160k-pair de->en data: {FAIRSEQ_DE_EN} "
              "tokenized BLEU (a ceiling for transformer_small on the 26.9k-pair subset).", "",
              "## SRP de->en (test BLEU, mean ± spread over seeds)", "",
              "| method | rate | seeds | BLEU | sacreBLEU | parameters |", "|---|---|---|---|---|---|"]
    for r in srp:
        lines.append(f"| {r['method']} | {r['rate']} | {r['seeds']} | {_fmt(r['bleu'])} | {_fmt(r['sacrebleu'])} | "
                     f"{r['parameters'] or '-'} |")
    lines += ["", "## PET en->de (test BLEU)", "", "| student | seeds | BLEU | sacreBLEU | parameters |",
              "|---|---|---|---|---|"]
    for r in pet:
        lines.append(f"| {r['method']} | {r['seeds']} | {_fmt(r['bleu'])} | {_fmt(r['sacrebleu'])} | "
                     f"{r['parameters'] or '-'} |")
    if speed:
        lines += ["", f"## Speed (beam 5, 25+25 tokens, {speed[0]['threads']} threads, median of "
                  f"{speed[0]['repeats']} interleaved rounds, load {speed[0]['load'][0]:.2f} -> {speed[0]['load'][1]:.2f})",
                  "", "| model | engine | MB | sent/s b1 | sent/s b64 | speedup b64 | FLOP-ideal | x pet eager teacher b64 |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in speed:
            mb = "-" if r["mb"] is None else f"{r['mb']:.1f}"
            lines.append(f"| {r['model']} | {r['engine']} | {mb} | {r['sent_per_s_b1']:.2f} | "
                         f"{r['sent_per_s_b64']:.2f} | {r['speedup_b64']:.2f} | {r['flop_ideal']:.2f} | "
                         f"{r['vs_pet_eager_teacher_b64']:.2f} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, epoch_curve, seeds, rates, srp_methods, pet_methods, measure: bool, threads: int,
                 repeats: int) -> str:
    teachers = teacher_rows(out, epoch_curve)
    srp = srp_rows(out, seeds, rates, srp_methods)
    pet = pet_rows(out, seeds, pet_methods)
    speed = measure_speed(out, rates, threads, repeats) if measure else []
    text = markdown(teachers, srp, pet, speed)
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps({"teachers": teachers, "srp": srp, "pet": pet, "speed": speed},
                                                indent=2))
    return text
