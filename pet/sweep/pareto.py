"""The Pareto front of (cost, quality) points: the jobs no other job beats."""

from __future__ import annotations

from typing import Sequence


def pareto_front(points: Sequence[tuple[float, float]], maximize: bool = True) -> list[int]:
    """Indices of points no other point dominates (y better or equal at x smaller
    or equal, strictly better in one), sorted by x."""
    def better_or_eq(a: float, b: float) -> bool:
        return a >= b if maximize else a <= b

    def strictly(a: float, b: float) -> bool:
        return a > b if maximize else a < b

    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            xj <= xi and better_or_eq(yj, yi) and (xj < xi or strictly(yj, yi))
            for j, (xj, yj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1] if maximize else points[i][1]))
