"""mechscope.experiments"""
