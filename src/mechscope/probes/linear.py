"""Linear probes: multi-class logistic or linear regression on activations, trained for many hooks at once.

``fit_probes`` stacks the activations of several hooks (all layers of a hook kind) into ``[H n d]`` and trains
one probe per hook in the same batched matmuls (full-batch Adam, L2 penalty, early stopping on validation
loss per hook: each hook keeps the weights of its own best validation epoch). Features are standardised
with the training split's mean and standard deviation; the saved probe keeps them, so ``direction()`` is
expressed in the raw activation space, ready for steering (``interventions.Add``) or for projecting out.

Hewitt & Liang (2019) control tasks: ``control_labels`` gives every word *type* a fixed random label drawn
from the task's label distribution; a probe that scores as well on that control task has memorised types,
not read the property. ``selectivity = task accuracy - control accuracy`` (on test).

A probe on disk is a directory with ``config.json`` (what it is, which hook) and ``probe.safetensors``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from mechscope.errors import ConfigError, ModelFileError, ShapeError

FORMAT, FORMAT_VERSION = "mechscope.probe", 1


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """How a linear probe is trained."""

    kind: Literal["logistic", "linear"] = "logistic"
    """``logistic``: multi-class softmax regression on int labels; ``linear``: least squares on float targets."""
    l2: float = 1e-3
    """L2 penalty on the weights (standardised features), added to the mean loss."""
    lr: float = 0.05
    """Adam learning rate (full batch)."""
    max_epochs: int = 500
    """Upper bound on full-batch steps."""
    patience: int = 25
    """Stop a hook's probe after this many steps without a better validation loss."""
    def __post_init__(self) -> None:
        if self.kind not in ("logistic", "linear"):
            raise ConfigError(f"ProbeConfig.kind must be 'logistic' or 'linear', got {self.kind!r}")
        if self.l2 < 0 or self.lr <= 0 or self.max_epochs < 1 or self.patience < 1:
            raise ConfigError(f"ProbeConfig needs l2 >= 0, lr > 0, max_epochs >= 1, patience >= 1; got {self}")


@dataclass(frozen=True)
class LinearProbe:
    """A trained probe: ``logits = ((x - mean) / std) @ weight + bias``."""

    cfg: ProbeConfig
    hook: str
    weight: Float[Tensor, "d c"]
    bias: Float[Tensor, " c"]
    mean: Float[Tensor, " d"]
    std: Float[Tensor, " d"]

    @property
    def n_classes(self) -> int:
        return int(self.weight.shape[1]) if self.cfg.kind == "logistic" else 0

    def scores(self, x: Float[Tensor, "n d"]) -> Float[Tensor, "n c"]:
        """Logits (logistic) or predictions in column 0 (linear) for activations ``x`` [n d]."""
        if x.shape[-1] != self.weight.shape[0]:
            raise ShapeError(f"probe on {self.hook!r} takes width {self.weight.shape[0]}, got {tuple(x.shape)}")
        return ((x.float() - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: Float[Tensor, "n d"]) -> Shaped[Tensor, " n"]:
        """Class ids (logistic) or predicted values (linear)."""
        s = self.scores(x)
        return s.argmax(-1) if self.cfg.kind == "logistic" else s[:, 0]

    def direction(self, cls: int | None = None) -> Float[Tensor, " d"]:
        """Unit direction in raw activation space along which the probe's output for ``cls`` grows.

        Binary logistic: class 1 minus class 0 (``cls`` ignored); multi-class: class ``cls`` minus the mean
        class; linear regression: the regression weight.
        """
        w = self.weight / self.std[:, None]
        if self.cfg.kind == "linear":
            v = w[:, 0]
        elif w.shape[1] == 2:
            v = w[:, 1] - w[:, 0]
        else:
            if cls is None or not 0 <= cls < w.shape[1]:
                raise ConfigError(f"a {w.shape[1]}-class probe needs cls in [0, {w.shape[1]}), got {cls}")
            v = w[:, cls] - w.mean(1)
        return v / v.norm().clamp_min(1e-12)

    def steering(self, scale: float, cls: int | None = None, **selection: Any) -> Any:
        """An ``interventions.Add`` adding ``scale`` x the probe direction at its hook (``selection``: rows/positions)."""
        from mechscope.interventions.spec import Add

        return Add(hook=self.hook, vector=self.direction(cls), scale=scale, **selection)

    def ablation(self, cls: int | None = None, **selection: Any) -> Any:
        """An ``interventions.Replace`` projecting the probe direction out of the activation at its hook."""
        from mechscope.interventions.spec import Replace

        v = self.direction(cls)

        def project_out(x: Tensor, hook: Any) -> Tensor:
            u = v.to(x.device, x.dtype)
            return x - (x @ u)[..., None] * u

        return Replace(hook=self.hook, fn=project_out, **selection)

    # -- files -----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` + ``probe.safetensors`` (atomic) into the directory ``path``."""
        from mechscope.dictionaries.io import atomic_save_tensors, atomic_write_json

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(root / "probe.safetensors", {"weight": self.weight, "bias": self.bias,
                                                         "mean": self.mean, "std": self.std})
        atomic_write_json(root / "config.json", {"format": FORMAT, "format_version": FORMAT_VERSION,
                                                 "hook": self.hook, "config": asdict(self.cfg)})
        return root

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearProbe:
        """Read a probe directory written by :meth:`save`."""
        from mechscope.dictionaries.io import read_json, read_tensors

        root = Path(path)
        meta = read_json(root / "config.json")
        if meta.get("format") != FORMAT or meta.get("format_version", 99) > FORMAT_VERSION:
            raise ModelFileError(f"{root / 'config.json'} is not a mechscope probe of version <= {FORMAT_VERSION}")
        t = read_tensors(root / "probe.safetensors")
        if set(t) != {"weight", "bias", "mean", "std"} or t["weight"].dim() != 2:
            raise ModelFileError(f"{root / 'probe.safetensors'} should hold weight [d c], bias, mean, std; got "
                                 f"{ {k: tuple(v.shape) for k, v in t.items()} }")
        return cls(ProbeConfig(**meta["config"]), meta["hook"], t["weight"], t["bias"], t["mean"], t["std"])


def _loss(kind: str, s: Tensor, y: Tensor) -> Tensor:
    """Per-hook mean loss [H] of scores [H n c] against targets [n]."""
    if kind == "logistic":
        h, n, c = s.shape
        return F.cross_entropy(s.reshape(h * n, c), y.repeat(h), reduction="none").view(h, n).mean(1)
    return ((s[..., 0] - y) ** 2).mean(1)


def fit_probes(x_train: Float[Tensor, "h n d"], y_train: Shaped[Tensor, " n"], x_val: Float[Tensor, "h m d"],
               y_val: Shaped[Tensor, " m"], hooks: list[str], cfg: ProbeConfig | None = None) -> list[LinearProbe]:
    """One probe per hook, trained together: ``x_*`` stacks the hooks' activations ``[H n d]``."""
    cfg = cfg or ProbeConfig()
    if len(hooks) != x_train.shape[0]:
        raise ConfigError(f"{len(hooks)} hook names for {x_train.shape[0]} stacked activations")
    if cfg.kind == "logistic":
        if y_train.is_floating_point():
            raise ConfigError("a logistic probe needs int class labels 0..C-1; use kind='linear' for float targets")
        if int(y_train.min()) < 0:
            raise ConfigError(f"class labels must be >= 0, got {int(y_train.min())}")
        n_out = int(max(int(y_train.max()), int(y_val.max()) if len(y_val) else 0)) + 1
        y_train, y_val = y_train.long(), y_val.long()
    else:
        n_out = 1
        y_train, y_val = y_train.float(), y_val.float()
    if n_out < 2 and cfg.kind == "logistic":
        raise ConfigError("a logistic probe needs at least two classes in the labels")
    mean = x_train.mean(1, keepdim=True)
    std = x_train.std(1, keepdim=True).clamp_min(1e-6)
    xt, xv = (x_train - mean) / std, (x_val - mean) / std
    h, _, d = xt.shape
    w = torch.zeros(h, d, n_out, requires_grad=True)  # convex losses: zero init, and hooks stay independent
    b = torch.zeros(h, 1, n_out, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=cfg.lr)
    best = torch.full((h,), float("inf"))
    best_w, best_b = w.detach().clone(), b.detach().clone()
    since = torch.zeros(h, dtype=torch.long)
    for _ in range(cfg.max_epochs):
        opt.zero_grad()
        loss = _loss(cfg.kind, torch.baddbmm(b, xt, w), y_train) + cfg.l2 * (w**2).sum((1, 2))
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            val = _loss(cfg.kind, torch.baddbmm(b, xv, w), y_val) if len(y_val) else loss.detach()
            better = (val < best - 1e-6) & (since < cfg.patience)  # a stopped hook keeps its best
            best = torch.where(better, val, best)
            best_w[better], best_b[better] = w[better], b[better]
            since = torch.where(better, torch.zeros_like(since), since + 1)
        if bool((since >= cfg.patience).all()):
            break
    return [LinearProbe(cfg, hooks[i], best_w[i], best_b[i, 0], mean[i, 0], std[i, 0]) for i in range(h)]


def score(probe: LinearProbe, x: Float[Tensor, "n d"], y: Shaped[Tensor, " n"]) -> float:
    """Accuracy (logistic) or R² (linear) of ``probe`` on ``(x, y)``."""
    pred = probe.predict(x)
    if probe.cfg.kind == "logistic":
        return float((pred == y).float().mean())
    y = y.float()
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum().clamp_min(1e-12))


def control_labels(types: Int[Tensor, " n"], labels: Int[Tensor, " n"], seed: int = 0) -> Int[Tensor, " n"]:
    """Hewitt & Liang control task: each word type gets one random label, drawn from the label distribution."""
    if types.shape != labels.shape:
        raise ShapeError(f"types {tuple(types.shape)} and labels {tuple(labels.shape)} must align")
    uniq, inv = torch.unique(types, return_inverse=True)
    freq = torch.bincount(labels.long()).float()
    gen = torch.Generator().manual_seed(seed)
    per_type = torch.multinomial(freq / freq.sum(), len(uniq), replacement=True, generator=gen)
    return per_type[inv]


__all__ = ["LinearProbe", "ProbeConfig", "control_labels", "fit_probes", "score"]
