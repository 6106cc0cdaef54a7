"""Circuit discovery on one graph: nodes, edges, patchable forward, discovery methods, ground truths."""
