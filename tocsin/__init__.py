"""Tocsin: an alerting daemon for ML models in production."""

__version__ = "0.1.0"
