"""The ``mechscope`` command line."""
