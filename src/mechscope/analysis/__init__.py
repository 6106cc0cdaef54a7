"""mechscope.analysis"""
