"""mechscope.cache"""
