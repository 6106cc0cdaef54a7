"""mechscope.activations"""
