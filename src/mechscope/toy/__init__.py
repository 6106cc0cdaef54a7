"""mechscope.toy"""
