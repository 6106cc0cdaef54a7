"""Transformer components, one concept per file; each exposes TransformerLens-named hook points."""
