"""mechscope.models.components"""
