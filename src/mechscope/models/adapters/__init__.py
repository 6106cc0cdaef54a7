"""mechscope.models.adapters"""
