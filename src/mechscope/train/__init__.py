"""mechscope.train"""
