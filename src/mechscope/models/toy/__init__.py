"""mechscope.models.toy"""
