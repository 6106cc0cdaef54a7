"""mechscope.viz"""
