"""Compression rate -> keep ratio -> how many units each gate group loses.

**Compression rate** (``pruning.compression_rate``, CR) is the fraction of
*all* parameters kept, embeddings included, measured against the *origin* of
the pruning chain: the model the first prune run of the chain started from
(recorded in every pruned checkpoint's ``pruning_history``). So a two-stage
chain at CR 0.5 ends with half the parameters of the unpruned model, the same
size single-stage pruning at CR 0.5 gives — which is what makes the methods
comparable at equal size.

Every parameter tensor has at most two dimensions, each either owned by a
gate group (:func:`pet.pruning.gates.dim_ownership`) or fixed. With a keep
ratio r on the targeted groups, a tensor with two targeted dimensions shrinks
with r², one with r, none not at all::

    n_quad r² + n_lin r + n_const = CR · N

(the method's n₁r² + n₂r = CR·(n₁+n₂), plus the constant part that a stage
pruning only some groups leaves untouched). :class:`Polynomial` solves it.

Per stage (``pruning.targets``):

* ``all`` (single stage): r solves the equation over every group.
* ``emb`` (two-stage, stage 1): r is the *same* r single-stage pruning would
  use, applied to the residual width only; the stage ends at the size the
  embedding share of the reduction gives.
* ``heads_ffn`` (stage 2): r solves the equation for q/k, v/o and FFN with the
  embedding width fixed where stage 1 left it, so the chain ends at CR·N.
  Without an earlier ``emb`` stage it is plain heads/FFN pruning to CR·N.

With ``pruning_iter`` = k, iteration i ends where the chain would be at keep
ratio r^(i/k): each iteration removes 1 − r^(1/k) of what the groups have
left, and the last iteration lands on CR·N exactly.

Rounding: each emb group prunes ⌈size·(1−ρ)⌉ units, each q/k or v/o group the
same ⌈head_dim·(1−ρ)⌉ in every head, and the FFN groups together
⌈F·(1−ρ)⌉ neurons under one global threshold (F = all FFN neurons). ρ starts at
the closed-form solution and is nudged (bisection on the rounded count) when
rounding alone would miss the target by more than the nudged ρ does. The
count after selection is exact and is reported next to the request.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence

from pet.errors import ConfigError
from pet.pruning.gates import DimOwnership, GateGroup

log = logging.getLogger(__name__)


# ------------------------------------------------------------- counting


def parameter_count(own: DimOwnership, kept: Mapping[str, float]) -> float:
    """Parameters of the model when group g keeps ``kept[g]`` units.

    Groups absent from ``kept`` keep everything. Fractional ``kept`` values
    give the continuous count the solver works with.
    """
    total = 0.0
    for name, p in own.params.items():
        n = 1.0
        for d, size in enumerate(p.shape):
            g = own.owners[name][d]
            n *= kept.get(g, size) if g is not None else size
        total += n
    return total


@dataclass
class Polynomial:
    """count(ρ) = quadratic·ρ² + linear·ρ + constant for the targeted groups."""

    quadratic: float
    linear: float
    constant: float

    def __call__(self, r: float) -> float:
        return self.quadratic * r * r + self.linear * r + self.constant

    def solve(self, target: float) -> float:
        """The keep ratio in [0, 1] at which the count equals ``target``."""
        q, l, c = self.quadratic, self.linear, self.constant - target
        if q > 0:
            r = (-l + math.sqrt(max(l * l - 4 * q * c, 0.0))) / (2 * q)
        elif l > 0:
            r = -c / l
        else:
            r = 1.0
        return min(max(r, 0.0), 1.0)


def polynomial(own: DimOwnership, targeted: Sequence[str], fixed: Optional[Mapping[str, float]] = None) -> Polynomial:
    """Coefficients of the parameter count in the keep ratio of ``targeted``
    groups; other groups keep ``fixed[g]`` units (default: all)."""
    targeted_set = set(targeted)
    fixed = fixed or {}
    coeff = [0.0, 0.0, 0.0]
    for name, p in own.params.items():
        n, degree = 1.0, 0
        for d, size in enumerate(p.shape):
            g = own.owners[name][d]
            if g is not None and g in targeted_set:
                degree += 1
                n *= size
            elif g is not None:
                n *= fixed.get(g, size)
            else:
                n *= size
        coeff[degree] += n
    return Polynomial(quadratic=coeff[2], linear=coeff[1], constant=coeff[0])


# ------------------------------------------------------------- chain targets


@dataclass
class ChainTarget:
    """Where this prune run must land, measured on the chain's origin."""

    origin_parameters: int
    compression_rate: float  # CR requested for the end of the chain
    keep_ratio: float  # the chain's r (on the origin)
    emb_level: float  # fraction of the origin's residual width kept after this run
    heads_ffn_level: float  # fraction of the origin's heads/FFN units kept after this run
    target_parameters: float

    @property
    def target_rate(self) -> float:
        return self.target_parameters / self.origin_parameters


def _levels_from_history(history: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    emb, hf = 1.0, 1.0
    for h in history:
        if h["targets"] in ("emb", "all"):
            emb = float(h["emb_level"])
        if h["targets"] in ("heads_ffn", "all"):
            hf = float(h["heads_ffn_level"])
    return emb, hf


def chain_target(
    origin: DimOwnership,
    origin_groups: Sequence[GateGroup],
    targets: str,
    compression_rate: float,
    iteration: int = 1,
    iterations: int = 1,
    history: Sequence[Mapping[str, Any]] = (),
) -> ChainTarget:
    """Target parameter count for this run (see the module docstring)."""
    if not 1 <= iteration <= iterations:
        raise ConfigError(f"pruning.iteration={iteration} must be between 1 and pruning.pruning_iter={iterations}")
    n_origin = parameter_count(origin, {})
    goal = compression_rate * n_origin
    emb = [g.name for g in origin_groups if g.kind == "emb"]
    hf = [g.name for g in origin_groups if g.kind != "emb"]
    sizes = {g.name: g.size for g in origin_groups}
    emb_prev, hf_prev = _levels_from_history(history)

    def count(a: float, b: float) -> float:
        kept = {g: a * sizes[g] for g in emb}
        kept.update({g: b * sizes[g] for g in hf})
        return parameter_count(origin, kept)

    if targets in ("all", "emb"):
        r = polynomial(origin, emb + hf).solve(goal)
        if targets == "all":
            start = min(emb_prev, hf_prev)
            if start < 1.0:
                log.warning("targets=all on a model that was already pruned in this chain; its levels start at %.3f", start)
        step = r ** (iteration / iterations)
        a = step
        b = step if targets == "all" else hf_prev
    else:  # heads_ffn
        fixed = {g: emb_prev * sizes[g] for g in emb}
        r = polynomial(origin, hf, fixed).solve(goal)
        a, b = emb_prev, r ** (iteration / iterations)
    target = count(a, b)
    if targets != "emb" and iteration == iterations:
        target = goal
    floor = count(emb_prev, 0.0) if targets == "heads_ffn" else count(0.0, 0.0)
    if goal <= floor:
        raise ConfigError(
            f"pruning.compression_rate={compression_rate} is below what pruning.targets={targets} can reach "
            f"on this model (more than {floor / n_origin:.3f} of its {int(n_origin):,} parameters always stay); "
            "raise the rate or prune more groups"
        )
    return ChainTarget(
        origin_parameters=int(n_origin),
        compression_rate=compression_rate,
        keep_ratio=r,
        emb_level=a,
        heads_ffn_level=b,
        target_parameters=target,
    )


# ------------------------------------------------------------- prune counts


@dataclass
class PrunePlan:
    """How many units to prune: per emb/qk/vo group, and one FFN pool."""

    keep_ratio: float  # ρ on the current model
    keep_ratio_closed_form: float
    counts: dict[str, int] = field(default_factory=dict)  # emb / qk / vo group -> units to prune
    ffn_pool: int = 0  # FFN neurons pruned across all targeted fc groups
    target_parameters: float = 0.0
    predicted_parameters: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ceil(x: float) -> int:
    return int(math.ceil(x - 1e-7))


def plan_for_ratio(groups: Sequence[GateGroup], rho: float) -> tuple[dict[str, int], int]:
    """⌈size·(1−ρ)⌉ per group (equal per head), one FFN pool; at least one
    unit of every group (and of every head, and of every FFN) is kept."""
    counts: dict[str, int] = {}
    fc = [g for g in groups if g.kind == "fc"]
    for g in groups:
        if g.kind == "emb":
            counts[g.name] = min(_ceil(g.size * (1 - rho)), g.size - 1)
        elif g.kind in ("qk", "vo"):
            per_head = min(_ceil(g.head_dim * (1 - rho)), g.head_dim - 1)
            counts[g.name] = per_head * g.heads
    total_fc = sum(g.size for g in fc)
    pool = min(_ceil(total_fc * (1 - rho)), total_fc - len(fc)) if fc else 0
    return counts, max(pool, 0)


def predicted_count(own: DimOwnership, groups: Sequence[GateGroup], counts: Mapping[str, int], pool: int) -> float:
    """Parameter count of a plan; the FFN pool is spread in proportion to
    layer widths (selection decides the real spread; the exact count follows)."""
    kept: dict[str, float] = {g: next(x.size for x in groups if x.name == g) - n for g, n in counts.items()}
    fc = [g for g in groups if g.kind == "fc"]
    total_fc = sum(g.size for g in fc)
    for g in fc:
        kept[g.name] = g.size * (1 - pool / total_fc)
    return parameter_count(own, kept)


def plan(own: DimOwnership, groups: Sequence[GateGroup], target: float) -> PrunePlan:
    """Prune counts for ``groups`` of the current model to land on ``target`` parameters."""
    names = [g.name for g in groups]
    closed = polynomial(own, names).solve(target)

    def evaluate(rho: float) -> tuple[float, dict[str, int], int]:
        counts, pool = plan_for_ratio(groups, rho)
        return predicted_count(own, groups, counts, pool), counts, pool

    best_rho = closed
    best = evaluate(closed)
    # The rounded count is non-decreasing in ρ: bisect for the two ρ that
    # bracket the target and keep whichever plan lands closest.
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if evaluate(mid)[0] >= target:
            hi = mid
        else:
            lo = mid
    for rho in (lo, hi):
        cand = evaluate(rho)
        if abs(cand[0] - target) < abs(best[0] - target) - 0.5:
            best_rho, best = rho, cand
    predicted, counts, pool = best
    emb = [g for g in groups if g.kind == "emb"]
    if emb:
        # A residual dimension is the coarsest step (a vocabulary row's worth
        # of parameters per stream); let each stream move by up to two units.
        base = counts
        for shift in itertools.product(range(-2, 3), repeat=len(emb)):
            trial = dict(base)
            for g, d in zip(emb, shift):
                trial[g.name] = min(max(base[g.name] + d, 0), g.size - 1)
            value = predicted_count(own, groups, trial, pool)
            if abs(value - target) < abs(predicted - target) - 0.5:
                counts, predicted = trial, value
    fc = [g for g in groups if g.kind == "fc"]
    if fc:
        # One FFN neuron is the finest step there is (2d+1 parameters): move
        # the global pool by the neurons that close the remaining gap.
        max_pool = sum(g.size for g in fc) - len(fc)
        probe = min(pool + 1, max_pool) if pool < max_pool else max(pool - 1, 0)
        per_neuron = abs(predicted - predicted_count(own, groups, counts, probe)) / max(abs(probe - pool), 1)
        if per_neuron > 0:
            new_pool = min(max(pool + round((predicted - target) / per_neuron), 0), max_pool)
            new_predicted = predicted_count(own, groups, counts, new_pool)
            if abs(new_predicted - target) < abs(predicted - target):
                pool, predicted = new_pool, new_predicted
    return PrunePlan(
        keep_ratio=best_rho,
        keep_ratio_closed_form=closed,
        counts=counts,
        ffn_pool=pool,
        target_parameters=target,
        predicted_parameters=predicted,
    )

