"""Features as a product: harvest statistics of dictionary latents (or neurons) over a corpus, store them in a
feature database, render dashboards, explain and score features with a language model.

Modules: ``source`` (what is harvested: a dictionary's latents or a layer's neurons), ``stats`` (the streaming
accumulators), ``harvest`` (the resumable pass over a corpus), ``db`` (the versioned SQL schema on SQLite or
PostgreSQL), ``render`` (the HTML feature page), ``autointerp`` (explainers and scorers).
"""
