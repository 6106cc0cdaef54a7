"""mechscope.interventions"""
