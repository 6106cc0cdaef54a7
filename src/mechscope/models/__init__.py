"""mechscope.models"""
