"""Measurements of how a toy model lays out its features (Elhage et al. 2022, "geometry" sections).

All functions take ``W [instances, n_features, d_hidden]`` (row ``W_i`` is feature i's direction) and are
batched over instances.

* ``‖W_i‖``: ≈1 when feature i is represented, ≈0 when it is dropped.
* superposition of feature i: ``Σ_{j≠i} (Ŵ_i · W_j)²`` — how much other features share its direction.
* feature dimensionality ``D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²``: the fraction of a dimension feature i gets
  (1 dedicated, 1/2 in an antipodal pair, 2/3 in a triangle, 2/5 in a pentagon, 3/4 in a tetrahedron).
* dimensions per feature ``d_hidden / ‖W‖_F²``: falls as sparsity rises, with "sticky" plateaus at the
  fractions above, where the features sit in one polytope family.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

STICKY_FRACTIONS: tuple[Fraction, ...] = (Fraction(1), Fraction(3, 4), Fraction(2, 3), Fraction(1, 2),
                                           Fraction(2, 5), Fraction(3, 8), Fraction(1, 3))
"""Dimensionalities of the uniform polytopes seen in the paper (digon 1/2, triangle 2/3, tetrahedron 3/4,
pentagon 2/5, square antiprism 3/8, ...)."""

PHASE_NOT_REPRESENTED = 0
"""n=2, m=1 phase: the extra feature (index 1) is dropped; feature 0 has the dimension."""
PHASE_DEDICATED = 1
"""n=2, m=1 phase: the extra feature has the dimension to itself; feature 0 is dropped."""
PHASE_SUPERPOSITION = 2
"""n=2, m=1 phase: both features share the dimension with opposite signs (an antipodal pair)."""
PHASE_NAMES = ("not represented", "dedicated dimension", "superposition")


def feature_norms(W: Float[Tensor, "instances n_features d_hidden"]) -> Float[Tensor, "instances n_features"]:
    """``‖W_i‖`` for every feature."""
    return W.norm(dim=-1)


def _overlaps(W: Float[Tensor, "instances n_features d_hidden"], eps: float = 1e-8
              ) -> Float[Tensor, "instances n_features n_features"]:
    """``(Ŵ_i · W_j)²`` for all pairs (row i normalised, column j raw)."""
    unit = W / W.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.bmm(unit, W.transpose(1, 2)).square()


def superposition(W: Float[Tensor, "instances n_features d_hidden"]) -> Float[Tensor, "instances n_features"]:
    """``Σ_{j≠i} (Ŵ_i · W_j)²``: interference other features put on feature i's direction."""
    ov = _overlaps(W)
    return ov.sum(-1) - torch.diagonal(ov, dim1=1, dim2=2)


def feature_dimensionality(W: Float[Tensor, "instances n_features d_hidden"], eps: float = 1e-8
                           ) -> Float[Tensor, "instances n_features"]:
    """``D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²`` (0 for a dropped feature)."""
    ov = _overlaps(W)
    return W.square().sum(-1) / ov.sum(-1).clamp_min(eps)


def dimensions_per_feature(W: Float[Tensor, "instances n_features d_hidden"]) -> Float[Tensor, " instances"]:
    """``d_hidden / ‖W‖_F²`` per instance."""
    return W.shape[-1] / W.square().sum((-1, -2))


def n_represented(W: Float[Tensor, "instances n_features d_hidden"], threshold: float = 0.5
                  ) -> Int[Tensor, " instances"]:
    """How many features have ``‖W_i‖ > threshold``."""
    return (feature_norms(W) > threshold).sum(-1)


def phase_n2m1(W: Float[Tensor, "instances 2 1"], threshold: float = 0.5) -> Int[Tensor, " instances"]:
    """Classify each n=2, m=1 instance: ``PHASE_NOT_REPRESENTED``, ``PHASE_DEDICATED`` or
    ``PHASE_SUPERPOSITION`` (both represented with opposite signs)."""
    w = W[..., 0]
    on = w.abs() > threshold
    both = on[:, 0] & on[:, 1] & (w[:, 0] * w[:, 1] < 0)
    phase = torch.full((W.shape[0],), PHASE_NOT_REPRESENTED, dtype=torch.int64)
    phase[on[:, 1] & ~on[:, 0]] = PHASE_DEDICATED
    phase[both] = PHASE_SUPERPOSITION
    return phase


class Plateau(NamedTuple):
    """A sticky plateau: consecutive sweep points whose dimensions-per-feature sit at one fraction."""

    fraction: Fraction
    """The polytope fraction the plateau sits at."""
    start: int
    """Index of its first sweep point."""
    length: int
    """Number of consecutive sweep points on it."""
    mean_value: float
    """Mean measured dimensions per feature over those points."""


def find_plateaus(values: Float[Tensor, " points"], rel_tol: float = 0.03, min_length: int = 2
                  ) -> list[Plateau]:
    """Runs of ≥ ``min_length`` consecutive sweep points within ``rel_tol`` of one sticky fraction."""
    out: list[Plateau] = []
    vals = values.tolist()
    for frac in STICKY_FRACTIONS:
        near = [abs(v - float(frac)) <= rel_tol * float(frac) for v in vals]
        i = 0
        while i < len(near):
            if not near[i]:
                i += 1
                continue
            j = i
            while j < len(near) and near[j]:
                j += 1
            if j - i >= min_length:
                out.append(Plateau(frac, i, j - i, sum(vals[i:j]) / (j - i)))
            i = j
    return sorted(out, key=lambda p: p.start)


def feature_groups(W: Float[Tensor, "n_features d_hidden"], threshold: float = 0.5, min_cos: float = 0.3
                   ) -> list[list[int]]:
    """Connected groups of represented features (``‖W_i‖ > threshold``) whose directions overlap
    (``|cos| > min_cos``): antipodal pairs are groups of 2, triangles 3, tetrahedra 4, pentagons 5 (their
    |cos| are 1, 1/2, 1/3, 0.31 and 0.81, so 0.3 links every pair of a polytope's neighbours)."""
    keep = (W.norm(dim=-1) > threshold).nonzero().flatten().tolist()
    unit = W[keep] / W[keep].norm(dim=-1, keepdim=True)
    adj = (unit @ unit.T).abs() > min_cos
    seen: set[int] = set()
    groups: list[list[int]] = []
    for a in range(len(keep)):  # a tiny graph (≤ n_features nodes): plain BFS is clearest
        if a in seen:
            continue
        comp, todo = [], [a]
        seen.add(a)
        while todo:
            u = todo.pop()
            comp.append(keep[u])
            for v in adj[u].nonzero().flatten().tolist():
                if v not in seen:
                    seen.add(v)
                    todo.append(v)
        groups.append(sorted(comp))
    return groups
