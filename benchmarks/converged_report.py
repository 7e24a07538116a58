"""The tables of benchmarks/converged.py: teachers, SRP, PET, speed, and the targets.

Reads what ``converged.py run`` left under ``--out`` (every final model's
test-set evaluation in ``eval/<task>/result.json``, the teachers' epoch
curves) and writes ``report.md`` and ``report.json`` there. Tasks not finished
yet are shown as missing, so the report can be read at any point of the run.
Every model's FLOPs per target token are counted (beam 5, 25 -> 25 tokens,
incremental decoding). With ``--measure`` it also times one model of each row
(seed 1) in pet's eager loop and in CTranslate2 (float32, int8) at batch 1 and
64, interleaved with its teacher: run that on an otherwise idle machine.
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
AVERAGED = ("last5", "best5")
FLOPS_LENGTH, BEAM = 25, 5


def _eval(out: Path, name: str) -> Optional[dict[str, Any]]:
    """The evaluate stage's result of task ``name`` (metrics and checkpoint), or None."""
    path = out / "eval" / name / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {spread(values) / 2:.{digits}f} (n={len(values)})"


def spread(values: list[float]) -> float:
    """max - min over seeds (0 for one seed)."""
    return max(values) - min(values) if values else 0.0


def flops_per_token(checkpoint: Optional[str], cache: dict[str, float]) -> Optional[float]:
    """FLOPs per target token of the checkpoint's model (beam 5, 25 -> 25 tokens)."""
    if not checkpoint or not Path(checkpoint).exists():
        return None
    if checkpoint not in cache:
        from pet.checkpoint import load_checkpoint, model_from_checkpoint
        from pet.pruning.report import measure

        model = model_from_checkpoint(load_checkpoint(checkpoint))
        cache[checkpoint] = measure(model, beam=BEAM, length=FLOPS_LENGTH).flops_per_tgt_token
    return cache[checkpoint]


def _row(found: list[dict[str, Any]], cache: dict[str, float]) -> dict[str, Any]:
    """BLEU, sacreBLEU and chrF over seeds, parameters and FLOPs of the first seed's model."""
    metrics = [r["metrics"] for r in found]
    return {"seeds": len(found), "bleu": [m["bleu"] for m in metrics],
            "sacrebleu": [m["sacrebleu"] for m in metrics if m.get("sacrebleu") is not None],
            "chrf": [m["chrf"] for m in metrics if m.get("chrf") is not None],
            "signatures": sorted({m[k] for m in metrics for k in ("sacrebleu_signature", "chrf_signature") if m.get(k)}),
            "parameters": metrics[0]["parameters"] if found else None,
            "flops_per_token": flops_per_token(found[0]["checkpoint"], cache) if found else None,
            "checkpoint": found[0]["checkpoint"] if found else None}


def teacher_rows(out: Path, epoch_curve, cache: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for name in ("teacher_de_en", "teacher_en_de", "tiny_teacher_en_de"):
        curve = epoch_curve(out / name)
        best = min(curve, key=lambda c: c["valid_loss"]) if curve else None
        variants = [(name, _eval(out, name))]
        if name != "tiny_teacher_en_de":
            variants += [(f"{name} averaged {sel}", _eval(out, f"average/{name}_{sel}")) for sel in AVERAGED]
        for label, res in variants:
            if label != name and res is None:
                continue
            row = {"model": label, **_row([res] if res else [], cache)}
            if label == name:
                row.update(epochs=curve[-1]["epoch"] if curve else 0, updates=curve[-1]["updates"] if curve else 0,
                           best_valid_loss=best["valid_loss"] if best else None, best_epoch=best["epoch"] if best else None,
                           curve=[(c["epoch"], round(c["valid_loss"], 4)) for c in curve])
            rows.append(row)
    return rows


def _last_training(epoch_curve, runs: list[Path]) -> dict[str, list]:
    """Epochs, updates and best validation loss of each seed's last training stage: the
    finetuning (or student) budget each model got, which the plateau rule sets per run."""
    curves = [c for c in (epoch_curve(run) for run in runs) if c]
    return {"train_epochs": [c[-1]["epoch"] for c in curves], "train_updates": [c[-1]["updates"] for c in curves],
            "best_valid_loss": [min(e["valid_loss"] for e in c) for c in curves]}


def srp_rows(out: Path, epoch_curve, seeds, rates, methods, cache: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for method in (*methods, "dense"):
        last = "train" if method == "dense" else "finetune"
        for rate in rates:
            found = {s: r for s in seeds if (r := _eval(out, f"srp/{method}@{rate}/seed{s}"))}
            runs = [out / f"srp/{method}@{rate}/seed{s}" / last for s in found]
            rows.append({"method": method, "rate": rate, **_row(list(found.values()), cache),
                         **_last_training(epoch_curve, runs)})
    return rows


def pet_rows(out: Path, epoch_curve, seeds, methods, cache: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for method in methods:
        last = "train" if method == "scratch" else "kd"
        found = {s: r for s in seeds if (r := _eval(out, f"pet/{method}/seed{s}"))}
        runs = [out / f"pet/{method}/seed{s}" / last for s in found]
        rows.append({"method": method, **_row(list(found.values()), cache), **_last_training(epoch_curve, runs)})
    return rows


def _per_seed(values: list, fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values) or "-"


def speed_groups(teachers, srp, pet) -> dict[str, dict[str, str]]:
    """Models timed together: each direction's teacher first (the speedups' base), then one model per row."""
    ckpt = {t["model"]: t["checkpoint"] for t in teachers}
    de_en = {"teacher_de_en": ckpt.get("teacher_de_en")}
    de_en.update({f"{r['method']}@{r['rate']}": r["checkpoint"] for r in srp if r["method"] != "dense"})
    en_de = {"teacher_en_de": ckpt.get("teacher_en_de"), "tiny_teacher_en_de": ckpt.get("tiny_teacher_en_de")}
    en_de.update({f"student {r['method']}": r["checkpoint"] for r in pet if r["method"] == "pet"})
    return {group: {n: c for n, c in models.items() if c and Path(c).exists()}
            for group, models in (("de_en", de_en), ("en_de", en_de))}


def measure_speed(groups: dict[str, dict[str, str]], threads: int, repeats: int) -> list[dict[str, Any]]:
    """Each group's models in pet eager and CTranslate2 float32/int8, interleaved
    rounds (beam 5, 25 -> 25 tokens); speedups and FLOP-ideal ones against the
    group's first model (its teacher)."""
    from pet.checkpoint import load_checkpoint, model_from_checkpoint
    from pet.export.speed import engine_latency, export_engines
    from pet.pruning.report import measure

    rows = []
    for group, models in groups.items():
        if len(models) < 2:
            continue
        with tempfile.TemporaryDirectory(prefix="pet-converged-") as tmp:
            systems, flops = [], {}
            for name, path in models.items():
                ckpt = load_checkpoint(path)
                model = model_from_checkpoint(ckpt).eval()
                flops[name] = measure(model, beam=BEAM, length=FLOPS_LENGTH).flops_per_sentence
                systems += export_engines(model, name, Path(tmp), threads, src_symbols=ckpt["src_dict"],
                                          tgt_symbols=ckpt["tgt_dict"])
            load_before = os.getloadavg()[0]
            speeds = engine_latency(systems, batch_sizes=(1, 64), repeats=repeats, threads=threads,
                                    length=FLOPS_LENGTH, beam=BEAM)
            load_after = os.getloadavg()[0]
        teacher = next(iter(models))
        base = {s.engine: v for s, v in zip(systems, speeds) if s.name == teacher}
        for s, v in zip(systems, speeds):
            row = {"group": group, "model": s.name, "engine": s.engine, "flop_ideal": flops[teacher] / flops[s.name],
                   "mb": s.bytes_on_disk / 2**20 if s.bytes_on_disk else None,
                   "load": [load_before, load_after], "threads": threads, "repeats": repeats}
            for bs in (1, 64):
                row[f"sent_per_s_b{bs}"] = v[bs]
                row[f"speedup_b{bs}"] = v[bs] / base[s.engine][bs]
            row["vs_pet_eager_teacher_b64"] = v[64] / base["pet"][64]
            rows.append(row)
    return rows


def checks(teachers, srp, pet, rates) -> list[str]:
    """The benchmark's targets, each with the numbers it was decided on (mean BLEU, spread = max - min over seeds)."""
    lines = []
    by = {(r["method"], r["rate"]): r for r in srp}
    for rate in rates:
        two = by.get(("two_stage", rate))
        if not two or not two["bleu"]:
            continue
        for other in ("oneshot", "random", "single_stage", "dense"):
            o = by.get((other, rate))
            if not o or not o["bleu"]:
                continue
            margin = statistics.mean(two["bleu"]) - statistics.mean(o["bleu"])
            noise = max(spread(two["bleu"]), spread(o["bleu"]))
            verdict = "met" if margin > noise else "MISSED"
            lines.append(f"SRP two-stage beats {other} at rate {rate} by more than the seed spread: {verdict} "
                         f"(margin {margin:+.2f} BLEU, spread {noise:.2f}, seeds {two['seeds']}/{o['seeds']})")
    teacher = next((t for t in teachers if t["model"] == "teacher_de_en" and t["bleu"]), None)
    two = by.get(("two_stage", 0.5))
    if teacher and two and two["bleu"]:
        gap = statistics.mean(two["bleu"]) - teacher["bleu"][0]
        lines.append(f"SRP two-stage at 0.5 within 1 BLEU of its teacher: {'met' if gap >= -1 else 'MISSED'} "
                     f"({gap:+.2f} BLEU)")
    students = {r["method"]: r for r in pet}
    student = students.get("pet")
    for other in ("scratch", "kd_only"):
        o = students.get(other)
        if student and student["bleu"] and o and o["bleu"]:
            margin = statistics.mean(student["bleu"]) - statistics.mean(o["bleu"])
            noise = max(spread(student["bleu"]), spread(o["bleu"]))
            lines.append(f"PET student beats {other}: {'met' if margin > 0 else 'MISSED'} (margin {margin:+.2f} BLEU, "
                         f"seed spread {noise:.2f}{', within the spread' if 0 < margin <= noise else ''})")
    return lines


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _share(parameters: Optional[int], base: Optional[int]) -> str:
    """``parameters`` as a percentage of ``base`` (its teacher's), or '-' while either is missing."""
    return "-" if not parameters or not base else f"{100 * parameters / base:.1f} %"


def markdown(teachers, srp, pet, speed, targets) -> str:
    teacher_params = {t["model"]: t["parameters"] for t in teachers}
    lines = ["## Teachers (test set, beam 5)", "",
             "| model | epochs | updates | best valid loss (epoch) | BLEU | sacreBLEU | chrF | parameters | MFLOPs/token |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in teachers:
        loss = f"{t['best_valid_loss']:.4f} ({t['best_epoch']})" if t.get("best_valid_loss") else "-"
        lines.append(f"| {t['model']} | {t.get('epochs', '-')} | {t.get('updates', '-')} | {loss} | {_fmt(t['bleu'])} | "
                     f"{_fmt(t['sacrebleu'])} | {_fmt(t['chrf'])} | {_num(t['parameters'], ',')} | "
                     f"{_num(t['flops_per_token'] and t['flops_per_token'] / 1e6, '.1f')} |")
    curves = [t for t in teachers if t.get("curve")]
    if curves:
        lines += ["", "Validation loss by epoch (epoch: label-smoothed loss, base 2):", ""]
        lines += [f"- {t['model']}: " + ", ".join(f"{e}: {loss:.2f}" for e, loss in t["curve"]) for t in curves]
    lines += ["", f"fairseq transformer_iwslt_de_en on the full 160k-pair de->en data: {FAIRSEQ_DE_EN} "
              "tokenized BLEU (a ceiling for transformer_small on the 26.9k-pair subset).", "",
              "## SRP de->en (test BLEU, mean ± half the spread over seeds)", "",
              "| method | rate | seeds | BLEU | sacreBLEU | chrF | parameters | of teacher | MFLOPs/token | "
              "last stage: epochs | updates | best valid loss |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in srp:
        lines.append(f"| {r['method']} | {r['rate']} | {r['seeds']} | {_fmt(r['bleu'])} | {_fmt(r['sacrebleu'])} | "
                     f"{_fmt(r['chrf'])} | {_num(r['parameters'], ',')} | "
                     f"{_share(r['parameters'], teacher_params.get('teacher_de_en'))} | "
                     f"{_num(r['flops_per_token'] and r['flops_per_token'] / 1e6, '.1f')} | "
                     f"{_per_seed(r['train_epochs'], 'd')} | {_per_seed(r['train_updates'], ',')} | "
                     f"{_per_seed(r['best_valid_loss'], '.4f')} |")
    lines += ["", "Last stage: SRP's finetuning (its own update count), the dense baseline's whole training; "
              "one value per seed."]
    lines += ["", "## PET en->de (test BLEU)", "",
              "| student | seeds | BLEU | sacreBLEU | chrF | parameters | of teacher | of tiny teacher | MFLOPs/token | "
              "updates | best valid loss |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in pet:
        lines.append(f"| {r['method']} | {r['seeds']} | {_fmt(r['bleu'])} | {_fmt(r['sacrebleu'])} | {_fmt(r['chrf'])} | "
                     f"{_num(r['parameters'], ',')} | {_share(r['parameters'], teacher_params.get('teacher_en_de'))} | "
                     f"{_share(r['parameters'], teacher_params.get('tiny_teacher_en_de'))} | "
                     f"{_num(r['flops_per_token'] and r['flops_per_token'] / 1e6, '.1f')} | "
                     f"{_per_seed(r['train_updates'], ',')} | {_per_seed(r['best_valid_loss'], '.4f')} |")
    signatures = sorted({sig for rows in (teachers, srp, pet) for r in rows for sig in r["signatures"]})
    if signatures:
        lines += ["", "sacreBLEU and chrF signatures: " + "; ".join(f"`{sig}`" for sig in signatures)]
    if speed:
        first = speed[0]
        lines += ["", f"## Speed (beam 5, 25+25 tokens, {first['threads']} threads, median of {first['repeats']} "
                  "interleaved rounds per direction; speedups against that direction's teacher in the same engine)", "",
                  "| model | engine | MB | sent/s b1 | sent/s b64 | speedup b1 | speedup b64 | FLOP-ideal | "
                  "x pet eager teacher b64 | load |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in speed:
            lines.append(f"| {r['model']} | {r['engine']} | {_num(r['mb'], '.1f')} | {r['sent_per_s_b1']:.2f} | "
                         f"{r['sent_per_s_b64']:.2f} | {r['speedup_b1']:.2f} | {r['speedup_b64']:.2f} | "
                         f"{r['flop_ideal']:.2f} | {r['vs_pet_eager_teacher_b64']:.2f} | "
                         f"{r['load'][0]:.2f} -> {r['load'][1]:.2f} |")
    if targets:
        lines += ["", "## Targets", "", *[f"- {t}" for t in targets]]
    return "\n".join(lines) + "\n"


def write_report(out: Path, epoch_curve, seeds, rates, srp_methods, pet_methods, measure: bool, threads: int,
                 repeats: int) -> str:
    cache: dict[str, float] = {}
    teachers = teacher_rows(out, epoch_curve, cache)
    srp = srp_rows(out, epoch_curve, seeds, rates, srp_methods, cache)
    pet = pet_rows(out, epoch_curve, seeds, pet_methods, cache)
    speed = measure_speed(speed_groups(teachers, srp, pet), threads, repeats) if measure else []
    targets = checks(teachers, srp, pet, rates)
    text = markdown(teachers, srp, pet, speed, targets)
    from pet.data.fileio import atomic_write_text

    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.json", json.dumps(
        {"teachers": teachers, "srp": srp, "pet": pet, "speed": speed, "targets": targets}, indent=2))
    return text
