"""mechscope.data"""
