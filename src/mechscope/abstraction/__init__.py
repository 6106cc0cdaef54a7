"""mechscope.abstraction: causal models, interchange interventions, DAS and causal scrubbing."""
