"""mechscope.dictionaries"""
