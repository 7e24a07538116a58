"""Metric names in the sweep report: one name per quantity, and which way is better.

pet's stages report the same quantity under different names; the report adds
the canonical name next to the stage's own: ``bleu_after`` -> ``bleu``,
``params_after`` -> ``parameters``, ``flops_per_tgt_token_after`` ->
``flops_per_tgt_token``, ``ms_per_sentence_b<N>[_after]`` -> ``latency_ms_b<N>``.
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
    return out


def alias_sources(keys: Iterable[str]) -> set[str]:
    """The stage-specific names among ``keys`` whose canonical name is there too."""
    keys = set(keys)
    src = {k for k, v in ALIASES.items() if k in keys and v in keys}
    src |= {k for k in keys if LATENCY_RE.match(k) and not k.startswith(LATENCY_PREFIX) and not k.endswith("_before")}
    return src


def latency_batch(key: str) -> int:
    """``latency_ms_b<N>`` -> N."""
    return int(key[len(LATENCY_PREFIX):])


def lower_is_better(name: str) -> bool:
    return any(s in name.lower() for s in LOWER_IS_BETTER)
