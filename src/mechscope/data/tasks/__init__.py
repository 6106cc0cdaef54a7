"""mechscope.data.tasks"""
