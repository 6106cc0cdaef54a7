"""Loading a transcoder set from disk, and writing a pruned graph as JSON (+ SVG) for the docs and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechscope.attribution.graph import AttributionGraph, PrunedGraph, graph_scores, top_paths
from mechscope.dictionaries.clt import CrossLayerTranscoder
from mechscope.dictionaries.transcoder import Transcoder
from mechscope.errors import ConfigError, ModelFileError


def load_transcoder_set(path: str | Path) -> CrossLayerTranscoder | list[Transcoder]:
    """A CLT directory, one transcoder directory, or a directory of transcoder directories (one per layer)."""
    from mechscope.dictionaries import io

    root = Path(path)
    if not root.is_dir():
        raise ModelFileError(f"{root} is not a directory; --transcoders takes a CLT or transcoder directory, or a "
                             f"directory of per-layer transcoder directories")
    dirs = [root] if (root / io.CONFIG_FILE).exists() else sorted(
        p for p in root.iterdir() if p.is_dir() and (p / io.CONFIG_FILE).exists())
    if not dirs:
        nested = sorted(p / "dictionary" for p in root.iterdir() if (p / "dictionary" / io.CONFIG_FILE).exists())
        dirs = nested
    if not dirs:
        raise ModelFileError(f"{root} holds no dictionary ({io.CONFIG_FILE}) nor subdirectories with one")
    loaded = [io.load(d) for d in dirs]
    if len(loaded) == 1 and isinstance(loaded[0], CrossLayerTranscoder):
        return loaded[0]
    bad = [d for d, x in zip(dirs, loaded) if not isinstance(x, Transcoder)]
    if bad:
        raise ConfigError(f"{bad[0]} is not a transcoder ({loaded[dirs.index(bad[0])].cfg.architecture}); a graph "
                          f"needs transcoders or one cross-layer transcoder")
    return [x for x in loaded if isinstance(x, Transcoder)]


def graph_json(graph: AttributionGraph, pruned: PrunedGraph, str_tokens: Sequence[str],
               logit_strs: Sequence[str], n_paths: int = 5) -> dict[str, Any]:
    """Kept nodes (name, layer, position, activation, influence), kept edges, scores and top paths."""
    names = graph.node_names()
    layer, pos = graph.node_layer_pos()
    nodes = []
    for n in pruned.node_mask.nonzero()[:, 0].tolist():
        row: dict[str, Any] = {"id": names[n], "layer": int(layer[n]), "pos": int(pos[n]),
                               "influence": float(pruned.node_influence[n])}
        if n < graph.n_features:
            row["activation"] = float(graph.activations[n])
        if graph.token_slice.start <= n < graph.token_slice.stop:
            row["token"] = str_tokens[n - graph.token_slice.start]
        if n >= graph.logit_slice.start:
            j = n - graph.logit_slice.start
            row["token"], row["probability"] = logit_strs[j], float(graph.logit_probabilities[j])
        nodes.append(row)
    tgt, src = pruned.edge_mask.nonzero(as_tuple=True)
    edges = [{"source": names[s], "target": names[t], "weight": float(graph.adjacency[t, s])}
             for t, s in zip(tgt.tolist(), src.tolist())]
    return {"tokens": list(str_tokens), "n_active_features": graph.n_features,
            "n_nodes_kept": len(nodes), "n_edges_kept": len(edges), **graph_scores(graph),
            "reconstruction_error": graph.reconstruction_error(),
            "top_logits": [{"token": s, "probability": float(p)} for s, p in zip(logit_strs, graph.logit_probabilities)],
            "top_paths": top_paths(graph, pruned, n_paths), "nodes": nodes, "edges": edges,
            "wall_seconds": graph.wall_seconds, "peak_rss_mb": graph.peak_rss_mb, "extras": graph.extras}


__all__ = ["load_transcoder_set", "graph_json"]
