"""Causal scrubbing (Chan et al. 2022) on attention-only transformers, at the level of heads.

A *hypothesis* names the model nodes that matter (``"embed"``: token + position embeddings; ``"L.H"``:
head H of layer L, its output ``attn.hook_result[..., H, :]``), the edges between them that matter (parent
→ child's query, key or value input, or parent → the output), and for each node a *feature*: a function
``resample(tokens, generator) -> tokens'`` giving inputs that agree with ``tokens`` on what the node is
claimed to compute (``identity``: the node's exact input matters).

The scrubbed forward evaluates the output as a tree (treeification). The residual read by a head's query,
key or value input, and by the unembedding, is rebuilt as the sum of every upstream node's output (plus the
output biases): a parent joined to it by a hypothesis edge is evaluated, recursively, on
``parent.resample(input of the child)``; every other parent is evaluated, with everything upstream of it,
on *one* random other input of the batch (the "does not matter" resample, a derangement of the rows).
Per-head input hooks (``hook_q_input`` / ``hook_k_input`` / ``hook_v_input``) carry the rebuilt residuals
to exactly one head at a time.

``loss recovered = (L_random - L_scrubbed) / (L_random - L_clean)``, where ``L_random`` is the loss with the
whole model run on the random input ("nothing matters", 0 %) and ``L_clean`` the unscrubbed loss
("everything matters", 100 %). Two ways to resample the unimportant paths: ``resample="shared"`` (one random
input per scrubbed forward serves every unimportant path; ``L_random`` is the whole model on it) and
``resample="per_path"`` (the paper's: every unimportant parent of every treeified input gets its own
independent draw, a fresh derangement of the batch; ``L_random`` is then the scrubbed loss of the empty
hypothesis, every path of the output resampled independently, with the same seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int
from torch import Tensor

from mechscope.errors import ConfigError

Resample = Callable[[Tensor, torch.Generator], Tensor]
INPUTS = ("q", "k", "v")


def identity(tokens: Tensor, gen: torch.Generator) -> Tensor:
    """The feature "the exact input": agreeing inputs are the input itself."""
    return tokens


@dataclass(frozen=True)
class Hypothesis:
    """Nodes that matter (with their features) and the edges between them that matter."""

    name: str
    nodes: dict[str, Resample]
    """Model node -> resampler of inputs agreeing on its feature (``identity`` for the exact input)."""
    edges: frozenset[tuple[str, str, str]] = field(default_factory=frozenset)
    """``(parent, child, input)``: ``child`` a node or ``"output"``; ``input`` one of q, k, v (``""`` for output)."""

    @classmethod
    def full(cls, name: str, nodes: Iterable[str], features: dict[str, Resample] | None = None) -> Hypothesis:
        """Every edge among ``nodes`` (earlier layer → later layer's q, k, v; every node → output)."""
        ns = list(nodes)
        layer = {n: -1 if n == "embed" else int(n.split(".")[0]) for n in ns}
        edges = {(p, c, i) for p in ns for c in ns if layer[p] < layer[c] for i in INPUTS}
        edges |= {(p, "output", "") for p in ns}
        return cls(name, {n: (features or {}).get(n, identity) for n in ns}, frozenset(edges))


def model_nodes(model: Any) -> list[str]:
    """``embed`` and every head ``L.H`` of an attention-only model."""
    return ["embed"] + [f"{layer}.{h}" for layer in range(model.cfg.n_layers) for h in range(model.cfg.attention.n_heads)]


def _check(model: Any, hyp: Hypothesis) -> None:
    if getattr(model.cfg, "mlp", None) is not None:
        raise ConfigError("causal scrubbing here works on attention-only models (cfg.mlp=None); this model has MLPs")
    if model.cfg.norm.post_sublayer:
        raise ConfigError("causal scrubbing rebuilds each residual as the sum of the heads' outputs (attn.hook_result); "
                          "this model normalises each attention output once more (norm.post_sublayer: ln1_post), so "
                          "the sum would not be its residual. Use a model without post-sublayer norms")
    known = set(model_nodes(model))
    bad = [n for n in hyp.nodes if n not in known]
    bad += [x for p, c, _ in hyp.edges for x in (p, c) if x not in known | {"output"}]
    if bad:
        raise ConfigError(f"hypothesis {hyp.name!r} names unknown model nodes {sorted(set(bad))}; nodes are 'embed' "
                          f"and 'L.H' for layer L < {model.cfg.n_layers}, head H < {model.cfg.attention.n_heads}")
    loose = [(p, c, i) for p, c, i in hyp.edges if p not in hyp.nodes or (c != "output" and c not in hyp.nodes)
             or (c == "output") != (i == "") or (c != "output" and i not in INPUTS)]
    if loose:
        raise ConfigError(f"hypothesis {hyp.name!r}: edges {sorted(loose)[:5]} join nodes outside the hypothesis or "
                          f"name an input other than q/k/v ('' for the output)")


class Scrubber:
    """Evaluates scrubbed forwards of one model on one batch (memoising clean node outputs per input)."""

    def __init__(self, model: Any, hyp: Hypothesis, tokens: Tensor, random_tokens: Tensor, gen: torch.Generator,
                 per_path: bool = False):
        _check(model, hyp)
        self.model, self.hyp, self.gen, self.per_path = model, hyp, gen, per_path
        self.tokens, self.random = tokens, random_tokens
        self._clean: dict[int, tuple[Tensor, dict[str, Tensor]]] = {}  # keeps x alive, so ids stay unique

    def clean_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """Every node's output on ``x`` in an ordinary forward pass (memoised by tensor identity)."""
        key = id(x)
        if key not in self._clean:
            names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.attn.hook_result" for i in range(self.model.cfg.n_layers)]
            with torch.no_grad():
                _, cache = self.model.run_with_cache(x, names=names)
            out = {"embed": cache["blocks.0.hook_resid_pre"]}
            for n in model_nodes(self.model)[1:]:
                layer, h = (int(v) for v in n.split("."))
                out[n] = cache[f"blocks.{layer}.attn.hook_result"][:, :, h]
            self._clean[key] = (x, out)
        return self._clean[key][1]

    def _bias(self, below: int) -> Tensor | float:
        bs = [blk.attn.b_O for blk in self.model.blocks[:below] if blk.attn.b_O is not None]
        return torch.stack(bs).sum(0) if bs else 0.0

    def residual(self, child: str, which: str, x: Tensor, below: int) -> Tensor:
        """The residual feeding ``child``'s input ``which`` (evaluated on ``x``), rebuilt from nodes below layer ``below``."""
        total: Tensor | float = self._bias(below)
        for u in model_nodes(self.model):
            if u != "embed" and int(u.split(".")[0]) >= below:
                continue
            if (u, child, which) in self.hyp.edges:
                total = total + self.node(u, self.hyp.nodes[u](x, self.gen))
            elif self.per_path:  # this path's own random input (everything upstream of u evaluated on it)
                total = total + self.clean_outputs(self.tokens[derangement(self.tokens.shape[0], self.gen)])[u]
            else:
                total = total + self.clean_outputs(self.random)[u]
        return cast(Tensor, total)

    def node(self, u: str, x: Tensor) -> Tensor:
        """Output of node ``u`` evaluated on input ``x`` with its inputs scrubbed per the hypothesis."""
        if u == "embed":
            return self.clean_outputs(x)["embed"]
        layer, h = (int(v) for v in u.split("."))
        inputs = {w: self.residual(u, w, x, layer) for w in INPUTS}
        got: dict[str, Tensor] = {}

        def put(w: str) -> Callable[[Tensor, Any], Tensor]:
            def fn(t: Tensor, hp: Any) -> Tensor:
                t = t.clone()
                t[:, :, h] = inputs[w]
                return t
            return fn

        def grab(t: Tensor, hp: Any) -> None:
            got["r"] = t[:, :, h]

        fwd = [(f"blocks.{layer}.hook_{w}_input", put(w)) for w in INPUTS] + [(f"blocks.{layer}.attn.hook_result", grab)]
        with torch.no_grad(), self.model.hooks(fwd=fwd):
            self.model(x, stop_at_layer=layer + 1)
        return got["r"]

    def logits(self) -> Tensor:
        resid = self.residual("output", "", self.tokens, self.model.cfg.n_layers)
        with torch.no_grad():
            return self.model.unembed(self.model.ln_final(resid))


def derangement(n: int, gen: torch.Generator) -> Int[Tensor, " n"]:
    """A random permutation with no fixed point (row i never resamples itself)."""
    if n < 2:
        raise ConfigError("causal scrubbing needs a batch of at least 2 inputs to resample from")
    while True:
        p = torch.randperm(n, generator=gen)
        if not bool((p == torch.arange(n)).any()):
            return p


def _loss(logits: Tensor, tokens: Tensor, mask: Tensor) -> float:
    lp = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, tokens[:, 1:, None])[..., 0]
    m = mask[:, 1:].float()
    return float(-(lp * m).sum() / m.sum())


@dataclass(frozen=True)
class ScrubResult:
    name: str
    loss: float
    loss_clean: float
    loss_random: float

    @property
    def loss_recovered(self) -> float:
        return (self.loss_random - self.loss) / (self.loss_random - self.loss_clean)


RESAMPLE = ("shared", "per_path")


def scrub(model: Any, hyp: Hypothesis, tokens: Int[Tensor, "batch pos"], loss_mask: Bool[Tensor, "batch pos"], *,
          seed: int = 0, resample: str = "shared") -> ScrubResult:
    """Loss of the scrubbed forward on ``tokens`` (next-token loss where ``loss_mask`` is set, at the predicted
    position) against the clean and the fully resampled losses (``resample``: see the module docstring)."""
    if resample not in RESAMPLE:
        raise ConfigError(f"resample must be one of {RESAMPLE}, got {resample!r}")
    per_path = resample == "per_path"
    gen = torch.Generator().manual_seed(seed)
    rand = tokens[derangement(tokens.shape[0], gen)]
    sc = Scrubber(model, hyp, tokens, rand, gen, per_path=per_path)
    with torch.no_grad():
        clean = _loss(model(tokens), tokens, loss_mask)
        if per_path:
            g0 = torch.Generator().manual_seed(seed)
            r0 = tokens[derangement(tokens.shape[0], g0)]
            random = _loss(Scrubber(model, Hypothesis("nothing", {}), tokens, r0, g0, per_path=True).logits(),
                           tokens, loss_mask)
        else:
            random = _loss(model(rand), tokens, loss_mask)
    return ScrubResult(hyp.name, _loss(sc.logits(), tokens, loss_mask), clean, random)


__all__ = ["RESAMPLE", "Hypothesis", "ScrubResult", "Scrubber", "derangement", "identity", "model_nodes", "scrub"]
