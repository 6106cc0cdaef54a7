"""Benchmark: circuit discovery cost (JSON on stdout).

* SmolLM2-135M IOI graph (70,651 edges), ``--n-prompts`` prompts: wall and CPU (``process_time``) time of
  ``discover(method="eap")`` (default ``precision="auto"``, and ``eap:full`` = float32 contraction) and
  ``discover(method="eap-ig", steps=5, chunk=5)`` as multiples of one plain forward of the same batch
  (target: EAP <= 4x; each run is bracketed by forwards, the ratio uses their median; the load average
  before and after is recorded). Times include everything ``discover`` does (graph, corrupted forward,
  the gradient forward + backward per chunk of steps, the contraction).
* ACDC on a small random GPT-2-shaped model: batched (``chunk`` guesses per forward) vs the
  one-edge-at-a-time reference on the same graph and data; reports both times, forwards and whether the
  circuits and scores are identical (target >= 10x, same circuit).

* ``--acdc-smollm``: ACDC batched vs the reference on SmolLM2 IOI (``--acdc-prompts`` prompts): a complete
  sweep both ways on SmolLM2's first ``--acdc-trunc-layers`` blocks (real weights); on the full model the
  first ``--acdc-receivers`` receivers of the reverse order batched, the reference's per-edge forward timed
  and its bits compared with resumed variants, per-edge batched cost at ``--acdc-probe-layers``, and the
  full 70,651-edge sweep extrapolated from those (method stated in the JSON).
* ``--acdc-peer``: ours vs auto-circuit 1.0.1 (ACDC and EAP) in the side venv (``MECHSCOPE_PEERS_PYTHON``,
  built by ``/work/shared/peers/setup_venv.sh DIR`` + ``pip install auto-circuit attrs``) on the same tiny
  model (exported as safetensors) and data: wall-time ratios, agreement of the kept / top edges.

Usage: ``python benchmarks/circuits.py [--threads 1] [--repeats 3] [--n-prompts 32] [--skip-smollm] [--skip-acdc]
[--methods eap,eap:full,eap-ig] [--acdc-smollm] [--acdc-peer]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PEERS_PY, machine, peak_rss_mb, run_worker, timeit  # noqa: E402


def _smollm(n_prompts: int, repeats: int, methods: list[str]) -> dict[str, Any]:
    import mechscope
    from mechscope.circuits.discover import discover
    from mechscope.experiments.circuits_ioi import ioi_task

    model = mechscope.load("smollm2-135m").eval()
    clean, corrupted, metric = ioi_task(model, n_prompts)

    def forward() -> None:
        with torch.no_grad():
            model(clean)

    def clocked(fn: Any) -> tuple[float, float]:
        """(wall, CPU) seconds: on the shared machine this process's CPU time is the steadier figure."""
        c, w = time.process_time(), time.perf_counter()
        fn()
        return time.perf_counter() - w, time.process_time() - c

    fwd = timeit(forward, repeats=repeats)
    out: dict[str, Any] = {"batch": list(clean.shape), "forward": fwd, "load_before": os.getloadavg()}
    # the shared machine's speed drifts: each discover run is bracketed by a forward and compared with those
    for name in methods:
        method, _, variant = name.partition(":")
        opts: dict[str, Any] = {"steps": 5, "chunk": 5} if method == "eap-ig" else {}
        if variant:
            opts["precision"] = variant
        runs, fwds = [], []
        for _ in range(max(1, repeats - 1)):
            fwds.append(clocked(forward))
            runs.append(clocked(lambda m=method, o=opts: discover(model, clean, corrupted, metric, method=m, **o)))
            fwds.append(clocked(forward))
        res: dict[str, Any] = {"options": opts}
        for i, clock in enumerate(("wall", "cpu")):
            med, fmed = statistics.median(r[i] for r in runs), statistics.median(f[i] for f in fwds)
            res[clock] = {"median_s": med, "min_s": min(r[i] for r in runs), "max_s": max(r[i] for r in runs),
                          "bracketing_forward_median_s": fmed, "x_forward": med / fmed}
        out[name] = res
    out["load_after"] = os.getloadavg()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _acdc(threshold: float, chunk: int) -> dict[str, Any]:
    from mechscope.circuits.discover import discover
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig
    from mechscope.models.transformer import HookedTransformer

    cfg = ModelConfig(d_model=64, n_layers=3, d_vocab=100, n_ctx=32,
                      attention=AttentionConfig(n_heads=4, d_head=16, qkv_bias=True, out_bias=True),
                      mlp=MLPConfig(d_mlp=128, bias=True), norm=NormConfig(kind="layernorm"))
    model = HookedTransformer(cfg, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 100, (8, 12), generator=g)
    corrupted = torch.randint(0, 100, (8, 12), generator=g)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 3] - logits[:, -1, 7]

    runs = {}
    for batched in (False, True):
        t = time.perf_counter()
        s = discover(model, clean, corrupted, metric, method="acdc", threshold=threshold, batched=batched, chunk=chunk)
        runs[batched] = (time.perf_counter() - t, s)
    (t_seq, seq), (t_bat, bat) = runs[False], runs[True]
    return {"n_edges": len(seq.graph.edges), "threshold": threshold, "chunk": chunk, "kept": len(seq.kept or ()),
            "sequential_s": t_seq, "batched_s": t_bat, "speedup": t_seq / t_bat,
            "forwards_sequential": seq.info["forwards"], "forwards_batched": bat.info["forwards"],
            "variants_batched": bat.info["variants"],
            "same_circuit": seq.kept == bat.kept, "scores_bit_identical": bool(torch.equal(seq.scores, bat.scores))}


def _smollm_ioi(n_prompts: int, n_layers: int | None = None) -> tuple[Any, Any, Any, Any]:
    """SmolLM2-135M (or its first ``n_layers`` blocks with the real final norm and unembedding) and IOI data."""
    import dataclasses

    import mechscope
    from mechscope.experiments.circuits_ioi import ioi_task
    from mechscope.models.transformer import HookedTransformer

    model = mechscope.load("smollm2-135m").eval()
    if n_layers is not None:
        small = HookedTransformer(dataclasses.replace(model.cfg, n_layers=n_layers), tokenizer=model.tokenizer)
        keep = {k: v for k, v in model.state_dict().items()
                if not k.startswith("blocks.") or int(k.split(".")[1]) < n_layers}
        small.load_state_dict(keep, strict=False)
        model = small.eval()
    clean, corrupted, metric = ioi_task(model, n_prompts)
    return model, clean, corrupted, metric


def _acdc_pair(model: Any, clean: Any, corrupted: Any, metric: Any, threshold: float, chunk: int,
               receivers: list[str] | None) -> dict[str, Any]:
    """ACDC batched and the one-edge-at-a-time reference, complete, on the same graph and data."""
    from mechscope.circuits.discover import discover

    runs = {}
    for batched in (True, False):
        t = time.perf_counter()
        s = discover(model, clean, corrupted, metric, method="acdc", threshold=threshold, batched=batched,
                     chunk=chunk, receivers=receivers)
        runs[batched] = (time.perf_counter() - t, s)
    (t_bat, bat), (t_seq, seq) = runs[True], runs[False]
    return {"n_edges": len(seq.graph.edges), "threshold": threshold,
            "chunk": chunk, "kept": len(seq.kept or ()), "sequential_s": t_seq, "batched_s": t_bat,
            "speedup": t_seq / t_bat, "forwards_sequential": seq.info["forwards"],
            "forwards_batched": bat.info["forwards"], "variants_batched": bat.info["variants"],
            "same_circuit": seq.kept == bat.kept, "scores_bit_identical": bool(torch.equal(seq.scores, bat.scores))}


def _acdc_smollm(n_prompts: int, threshold: float, chunk: int, n_receivers: int, probe_layers: list[int],
                 ref_forwards: int, trunc_layers: int) -> dict[str, Any]:
    """ACDC on SmolLM2 IOI (70,651 edges): a complete sweep costs ~70k reference forwards, so both are
    measured on stated parts and the full sweep is extrapolated (method in ``extrapolation``)."""
    from mechscope.circuits.acdc import _sweep_columns
    from mechscope.circuits.discover import discover
    from mechscope.circuits.graph import Graph
    from mechscope.circuits.patchable import patched_logits
    from mechscope.circuits.problem import Problem
    from mechscope.circuits.resume import ResumeForward

    out: dict[str, Any] = {}
    # 1. a complete sweep, both ways, on the first `trunc_layers` blocks of SmolLM2 (real weights)
    small = _smollm_ioi(n_prompts, trunc_layers)
    out["complete_sweep_truncated"] = {"model": f"SmolLM2-135M blocks 0..{trunc_layers - 1} + final norm + unembed",
                                       **_acdc_pair(*small, threshold, chunk, None)}
    del small
    model, clean, corrupted, metric = _smollm_ioi(n_prompts)
    g = Graph.from_model(model)
    order = [g.receivers[c].name for c in _sweep_columns(g, None)]
    subset = order[:n_receivers]
    n_sub = sum(g.n_senders_before(g.receivers[g.receiver_index[r]]) for r in subset)
    # 2. batched ACDC on the first receivers of the reverse order (exactly the start of a full run)
    t = time.perf_counter()
    bat = discover(model, clean, corrupted, metric, method="acdc", threshold=threshold, chunk=chunk, receivers=subset)
    t_bat = time.perf_counter() - t
    # 3. the reference's cost per edge: its forward (one full patched forward per tested edge), timed on the
    #    final state of step 2 with one more edge patched; and the bits of resumed variants against it
    problem = Problem(model, g, clean, corrupted, metric, -1)
    engine = ResumeForward(model, g, clean, problem.patch, -1)
    state = g.scatter(torch.tensor([0.0 if n in bat.kept else 1.0 for n in g.edge_names]))
    ref_times, bit_checks = [], []
    for r in subset:
        col = g.receiver_index[r]
        senders = g.valid[:, col].nonzero().flatten()
        variants = state.repeat(2, 1, 1)
        variants[:, :, :col] = 0  # ACDC's state while it sweeps r: receivers after r in its order untouched
        for v in range(2):  # variant v flips the edge from the v-th sender
            variants[v, senders[v], col] = 1.0 - state[senders[v], col]
        assert engine.applies(g.gather(variants), col)
        resumed = engine.logits(variants, col)
        for v in range(2):
            t = time.perf_counter()
            with torch.no_grad():
                want = patched_logits(model, g, clean, problem.patch, variants[v], readout=-1)
            if len(ref_times) < ref_forwards:
                ref_times.append(time.perf_counter() - t)
            bit_checks.append(bool(torch.equal(resumed[v * clean.shape[0]:(v + 1) * clean.shape[0]], want)))
    ref_edge = statistics.median(ref_times)
    sub = {"receivers": subset, "edges": n_sub, "batched_s": t_bat, "forwards_batched": bat.info["forwards"],
           "variants_batched": bat.info["variants"], "kept_of_tested": n_sub - (len(g.edges) - len(bat.kept)),
           "reference_forward_median_s": ref_edge, "reference_forwards_timed": len(ref_times),
           "reference_estimated_s": ref_edge * n_sub, "speedup": ref_edge * n_sub / t_bat,
           "resumed_equals_reference_bits": f"{sum(bit_checks)}/{len(bit_checks)} variants"}
    # 4. batched cost per edge by the receiver's layer (one receiver's sweep each, a0..: its q of head 0)
    per_layer = {}
    for L in probe_layers:
        r = f"a{L}.h0<q>"
        t = time.perf_counter()
        s = discover(model, clean, corrupted, metric, method="acdc", threshold=threshold, chunk=chunk, receivers=[r])
        dt = time.perf_counter() - t
        n = g.n_senders_before(g.receivers[g.receiver_index[r]])
        per_layer[L] = {"receiver": r, "edges": n, "batched_s": dt, "per_edge_s": dt / n, "forwards": s.info["forwards"]}
    # 5. extrapolation: per-edge cost linear in the layer between probes (flat beyond them); logits edges
    #    at the measured subset's logits rate is not separable, so they are costed like the last probe layer
    xs = sorted(per_layer)

    def cost(layer: int) -> float:
        if layer <= xs[0]:
            return per_layer[xs[0]]["per_edge_s"]
        for a, b in zip(xs, xs[1:]):
            if layer <= b:
                f = (layer - a) / (b - a)
                return (1 - f) * per_layer[a]["per_edge_s"] + f * per_layer[b]["per_edge_s"]
        return per_layer[xs[-1]]["per_edge_s"]

    total_fast = sum(g.n_senders_before(r) * cost(min(r.layer, g.n_layers - 1)) for r in g.receivers)
    out["smollm2_ioi"] = {"batch": list(clean.shape), "n_edges": len(g.edges), "subset": sub, "per_layer": per_layer,
                          "extrapolation": {
                              "method": "batched: per-edge time of one receiver's sweep at the probe layers, linear "
                                        "in between, flat outside, times each receiver's edge count (logits edges "
                                        "costed as the last layer's, an overestimate); reference: its median "
                                        "forward time times 70,651",
                              "batched_full_sweep_s": total_fast, "reference_full_sweep_s": ref_edge * len(g.edges),
                              "speedup": ref_edge * len(g.edges) / total_fast}}
    return out


_PEER_SHAPE = dict(n_layers=3, d_model=64, n_heads=4, d_head=16, d_mlp=128, d_vocab=100, n_ctx=32)


def _peer_worker(path: str, threshold: float) -> None:
    """(Side venv) auto-circuit's ACDC and EAP on the mechscope model saved at ``path``: one JSON line."""
    import types

    import transformer_lens as tl
    from safetensors.torch import load_file

    # auto-circuit 1.0.1 imports a module TransformerLens 3 renamed; alias it (the class is unchanged)
    alias = types.ModuleType("transformer_lens.past_key_value_caching")
    alias.HookedTransformerKeyValueCache = tl.TransformerLensKeyValueCache  # type: ignore[attr-defined]
    sys.modules[alias.__name__] = alias
    tl.HookedTransformerKeyValueCache = tl.TransformerLensKeyValueCache  # type: ignore[attr-defined]
    from auto_circuit.data import PromptDataLoader, PromptDataset
    from auto_circuit.prune_algos.ACDC import acdc_prune_scores
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.utils.graph_utils import patchable_model

    data = load_file(path)
    cfg = tl.HookedTransformerConfig(act_fn="gelu_new", normalization_type="LN", **_PEER_SHAPE)
    model = tl.HookedTransformer(cfg)
    state = {k: v for k, v in data.items() if not k.startswith("data.")}
    state["unembed.b_U"] = torch.zeros(cfg.d_vocab)
    missing = [k for k in model.state_dict() if k not in state and not k.endswith(("IGNORE", "mask"))]
    model.load_state_dict(state, strict=False)
    model.eval()
    clean, corrupted = data["data.clean"].long(), data["data.corrupted"].long()
    with torch.no_grad():
        logit_err = float((model(clean) - data["data.logits"]).abs().max())
    model.cfg.use_attn_result = model.cfg.use_split_qkv_input = model.cfg.use_hook_mlp_in = True
    t = time.perf_counter()
    pm = patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True, device=torch.device("cpu"))
    setup_s = time.perf_counter() - t
    ds = PromptDataset(list(clean), list(corrupted), [torch.tensor([3])] * len(clean), [torch.tensor([7])] * len(clean))
    loader = PromptDataLoader(ds, seq_len=None, diverge_idx=0, batch_size=len(clean), shuffle=False)
    mant, exp = f"{threshold:e}".split("e")
    assert float(mant) == int(float(mant)), "threshold must be a * 10**b with integer a"
    t = time.perf_counter()
    acdc = acdc_prune_scores(pm, loader, None, tao_exps=[int(exp)], tao_bases=[int(float(mant))])
    acdc_s = time.perf_counter() - t
    t = time.perf_counter()
    eap = mask_gradient_prune_scores(pm, loader, None, grad_function="logit", answer_function="avg_diff", mask_val=0.0)
    eap_s = time.perf_counter() - t
    kept = [str(e) for e in pm.edges if bool(torch.isinf(e.prune_score(acdc)))]
    print(json.dumps({"edges": len(pm.edges), "setup_s": setup_s, "acdc_s": acdc_s, "eap_s": eap_s,
                      "tl_vs_mechscope_max_abs_logit_diff": logit_err, "missing_weights": missing, "acdc_kept": kept,
                      "eap_scores": {str(e): float(e.prune_score(eap)) for e in pm.edges}}))


def _peer_name(name: str) -> str:
    """auto-circuit's edge name -> ours (``A1.2->A2.0.Q`` -> ``a1.h2->a2.h0<q>``)."""
    import re

    def node(n: str) -> str:
        n = n.strip()
        if n == "Resid Start":
            return "input"
        if n == "Resid End":
            return "logits"
        if n.startswith("MLP "):
            return f"m{n[4:]}"
        m = re.fullmatch(r"A(\d+)\.(\d+)(?:\.([QKV]))?", n)
        if m is None:
            raise ValueError(f"unexpected auto-circuit node {n!r}")
        return f"a{m[1]}.h{m[2]}" + (f"<{m[3].lower()}>" if m[3] else "")

    s, r = name.split("->")
    return f"{node(s)}->{node(r)}"


def _acdc_peer(threshold: float, chunk: int) -> dict[str, Any]:
    """Ours vs auto-circuit (side venv, TransformerLens 3.9) on the same tiny model and data."""
    import tempfile

    from safetensors.torch import save_file

    from mechscope.circuits.discover import discover
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig
    from mechscope.models.transformer import HookedTransformer

    p = _PEER_SHAPE
    cfg = ModelConfig(d_model=p["d_model"], n_layers=p["n_layers"], d_vocab=p["d_vocab"], n_ctx=p["n_ctx"],
                      attention=AttentionConfig(n_heads=p["n_heads"], d_head=p["d_head"], qkv_bias=True, out_bias=True),
                      mlp=MLPConfig(d_mlp=p["d_mlp"], act="gelu_new", bias=True), norm=NormConfig(kind="layernorm"),
                      positional=PositionalConfig(kind="learned"))
    model = HookedTransformer(cfg, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial norms and biases, so a conversion bug would show in the logits
        for name, prm in model.named_parameters():
            if name.endswith((".w", ".b")) or ".b_" in name:
                prm.add_(torch.randn(prm.shape, generator=g) * 0.1)
    clean = torch.randint(0, p["d_vocab"], (8, 12), generator=g)
    corrupted = torch.randint(0, p["d_vocab"], (8, 12), generator=g)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 3] - logits[:, -1, 7]

    with torch.no_grad():
        logits = model(clean)
    ours: dict[str, Any] = {}
    for name, opts in (("acdc", {"threshold": threshold, "chunk": chunk}), ("acdc_reference", {"threshold": threshold,
                       "batched": False}), ("eap", {})):
        t = time.perf_counter()
        s = discover(model, clean, corrupted, metric, method="eap" if name == "eap" else "acdc", **opts)
        ours[name] = (time.perf_counter() - t, s)
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "peer.safetensors")
        save_file({**{k: v.contiguous() for k, v in model.state_dict().items()}, "data.clean": clean,
                   "data.corrupted": corrupted, "data.logits": logits}, path)
        peer = run_worker(PEERS_PY, __file__, ["--peer-worker", path, "--threshold", str(threshold)], timeout=1200)
    out: dict[str, Any] = {"model": {**p, "act": "gelu_new", "norm": "layernorm", "random_init_seed": 0},
                           "batch": list(clean.shape), "threshold": threshold, "objective": "kl (last position)",
                           "peer_python": PEERS_PY}
    if "error" in peer:
        return {**out, "peer_error": peer["error"]}
    kept_ours = ours["acdc"][1].kept or frozenset()
    kept_peer = {_peer_name(e) for e in peer["acdc_kept"]}
    eap_ours = ours["eap"][1].to_dict()
    names = sorted(eap_ours)
    peer_eap = {_peer_name(k): v for k, v in peer["eap_scores"].items()}
    a = torch.tensor([abs(eap_ours[n]) for n in names])
    b = torch.tensor([abs(peer_eap[n]) for n in names])
    out.update({
        "edges": {"ours": len(names), "auto_circuit": peer["edges"]},
        "tl_vs_mechscope_max_abs_logit_diff": peer["tl_vs_mechscope_max_abs_logit_diff"],
        "acdc": {"ours_batched_s": ours["acdc"][0], "ours_reference_s": ours["acdc_reference"][0],
                 "auto_circuit_s": peer["acdc_s"], "auto_circuit_setup_s": peer["setup_s"],
                 "auto_circuit_over_ours_batched": peer["acdc_s"] / ours["acdc"][0],
                 "kept_ours": len(kept_ours), "kept_auto_circuit": len(kept_peer),
                 "kept_both": len(kept_ours & kept_peer),
                 "jaccard": len(kept_ours & kept_peer) / max(1, len(kept_ours | kept_peer)),
                 "ours_reference_same_circuit": ours["acdc_reference"][1].kept == kept_ours},
        "eap": {"ours_s": ours["eap"][0], "auto_circuit_s": peer["eap_s"],
                "abs_score_pearson": float(torch.corrcoef(torch.stack([a, b]))[0, 1]),
                "top10_overlap": len(set(sorted(names, key=lambda n: -abs(eap_ours[n]))[:10])
                                     & set(sorted(names, key=lambda n: -abs(peer_eap[n]))[:10]))}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=0.005)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--skip-smollm", action="store_true")
    ap.add_argument("--skip-acdc", action="store_true")
    ap.add_argument("--methods", default="eap,eap:full,eap-ig",
                    help="comma-separated discover methods for SmolLM2, ':full' / ':bf16' picks the precision")
    ap.add_argument("--acdc-smollm", action="store_true", help="ACDC batched vs reference on SmolLM2 IOI (slow)")
    ap.add_argument("--acdc-prompts", type=int, default=8)
    ap.add_argument("--acdc-receivers", type=int, default=4, help="first receivers of the reverse order swept")
    ap.add_argument("--acdc-probe-layers", default="29,20,10")
    ap.add_argument("--acdc-ref-forwards", type=int, default=6)
    ap.add_argument("--acdc-trunc-layers", type=int, default=3)
    ap.add_argument("--acdc-peer", action="store_true", help="ours vs auto-circuit in the side venv (PEERS_PY)")
    ap.add_argument("--peer-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_worker:
        torch.set_num_threads(args.threads)
        _peer_worker(args.peer_worker, args.threshold)
        return
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"machine": machine(), "load_average_start": list(os.getloadavg())}
    if not args.skip_acdc:
        out["acdc"] = _acdc(args.threshold, args.chunk)
    if not args.skip_smollm:
        out["smollm2_ioi"] = _smollm(args.n_prompts, args.repeats, args.methods.split(","))
    if args.acdc_smollm:
        out["acdc_smollm"] = _acdc_smollm(args.acdc_prompts, args.threshold, args.chunk, args.acdc_receivers,
                                          [int(x) for x in args.acdc_probe_layers.split(",")],
                                          args.acdc_ref_forwards, args.acdc_trunc_layers)
    if args.acdc_peer:
        out["acdc_peer"] = _acdc_peer(args.threshold, args.chunk)
    out["load_average_end"] = list(os.getloadavg())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
