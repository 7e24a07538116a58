"""Metric names in the sweep report: one name per quantity, and which way is better.

pet's stages report the same quantity under different names; the report adds
the canonical name next to the stage's own: ``bleu_after`` -> ``bleu``,
``params_after`` -> ``parameters``, ``flops_per_tgt_token_after`` ->
``flops_per_tgt_token``, ``ms_per_sentence_b<N>[_after]`` -> ``latency_ms_b<N>``.

CTranslate2's speed is reported as sentences/s (``ct2_<quantization>_sent_per_s_b<N>``
by stage=export, with ``_after`` for the pruned model by stage=prune); the
report turns it into a cost, milliseconds per sentence
(``ct2_<quantization>_latency_ms_b<N>`` = 1000 / sentences per second), so
that smaller is better on every plot's x axis like pet's ``latency_ms_b<N>``;
the folder's size on disk is ``ct2_<quantization>_mb`` (``_mb_after`` from a
prune). pet's own ``pet_sent_per_s_b<N>`` (stage=export) becomes
``latency_ms_b<N>`` where no ms/sentence was reported.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

# Preferred leading metric columns, in this order, when present.
PREFERRED = ("bleu", "sacrebleu", "parameters", "flops_per_tgt_token")
ALIASES = {"bleu_after": "bleu", "params_after": "parameters", "flops_per_tgt_token_after": "flops_per_tgt_token"}
LATENCY_PREFIX = "latency_ms_b"
LATENCY_RE = re.compile(r"^(?:ms_per_sentence_b(\d+)(?:_after)?|latency_ms_b(\d+))$")
# Engine speed in sentences/s (pet's eager loop, or CTranslate2 with a quantization)
# and CTranslate2's folder size; a prune reports the pruned model's with "_after".
SPEED_RE = re.compile(r"^(pet|ct2_[a-z0-9_]+?)_sent_per_s_b(\d+)(?:_after)?$")
CT2_SIZE_RE = re.compile(r"^(ct2_[a-z0-9_]+?)_mb(?:_after)?$")
CT2_LATENCY_RE = re.compile(r"^ct2_([a-z0-9_]+?)_latency_ms_b(\d+)$")
CT2_SIZE_KEY = re.compile(r"^ct2_([a-z0-9_]+?)_mb$")
# Lower is better for metrics whose name contains one of these.
LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "error", "latency", "seconds", "ms_")


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among ``metrics`` (booleans, strings, tables and NaN left out)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            continue
        out[str(k)] = v
    return out


def canonicalize(metrics: Mapping[str, float]) -> dict[str, float]:
    """Add the canonical names (see module doc) next to the stage-specific ones."""
    out = dict(metrics)
    for src, dst in ALIASES.items():
        if src in metrics and dst not in out:
            out[dst] = metrics[src]
    for k, v in metrics.items():
        m = LATENCY_RE.match(k)
        if m and not k.startswith(LATENCY_PREFIX) and not k.endswith("_before"):
            dst = f"{LATENCY_PREFIX}{m.group(1)}"
            # an "_after" value (the pruned model) wins over a plain one
            if dst not in metrics and (dst not in out or k.endswith("_after")):
                out[dst] = v
    for k, v in metrics.items():
        speed, size = SPEED_RE.match(k), CT2_SIZE_RE.match(k)
        if speed and v > 0:
            engine, bs = speed.groups()
            dst = f"{LATENCY_PREFIX}{bs}" if engine == "pet" else f"{engine}_latency_ms_b{bs}"
            if dst not in metrics and (dst not in out or (k.endswith("_after") and engine != "pet")):
                out[dst] = 1000.0 / v
        elif size and k.endswith("_after"):
            dst = f"{size.group(1)}_mb"
            if dst not in metrics:
                out[dst] = v
    return out


def alias_sources(keys: Iterable[str]) -> set[str]:
    """The stage-specific names among ``keys`` whose canonical name is there too."""
    keys = set(keys)
    src = {k for k, v in ALIASES.items() if k in keys and v in keys}
    src |= {k for k in keys if LATENCY_RE.match(k) and not k.startswith(LATENCY_PREFIX) and not k.endswith("_before")}
    src |= {k for k in keys if SPEED_RE.match(k) or (CT2_SIZE_RE.match(k) and k.endswith("_after"))}
    return src


def ct2_columns(keys: Iterable[str]) -> list[str]:
    """The canonical CTranslate2 columns among ``keys``: latencies (int8
    first, then by batch size), then sizes."""
    keys = set(keys)
    lat = sorted((k for k in keys if CT2_LATENCY_RE.match(k)),
                 key=lambda k: (quantization_rank(CT2_LATENCY_RE.match(k).group(1)), int(CT2_LATENCY_RE.match(k).group(2))))
    size = sorted((k for k in keys if CT2_SIZE_KEY.match(k)), key=lambda k: quantization_rank(CT2_SIZE_KEY.match(k).group(1)))
    return lat + size


# The CTranslate2 quantization a plot prefers when the jobs report several.
QUANTIZATIONS = ("int8", "int8_float32", "float32")


def quantization_rank(q: str) -> int:
    return QUANTIZATIONS.index(q) if q in QUANTIZATIONS else len(QUANTIZATIONS)


def latency_batch(key: str) -> int:
    """``latency_ms_b<N>`` -> N."""
    return int(key[len(LATENCY_PREFIX):])


def lower_is_better(name: str) -> bool:
    return any(s in name.lower() for s in LOWER_IS_BETTER)
