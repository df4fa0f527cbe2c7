"""Reproducible end-to-end recipes of the restorer wing (each runnable with ``python -m``)."""
