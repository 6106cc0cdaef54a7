"""mechscope.probes: activation datasets, linear / k-sparse probes and contrast-consistent search."""
