"""Attribution: which inputs (tokens) and which features (transcoder latents) a model's output depends on.

``tokens``: integrated gradients, Shapley value sampling, LIME and embedding patching over input tokens.
``clt``/``replacement``: cross-layer transcoders and the full replacement model.
``graph``: local replacement model and attribution graph of one prompt; ``qk``: attention (QK) attribution.
"""
