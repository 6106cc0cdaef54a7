"""Autointerp: explain a feature from its examples with a language model, then score the explanation by
detection and fuzzing (Paulo et al.'s delphi scorers). ``clients`` (who answers), ``explain``, ``scoring``."""
