"""Rules: samples in, per-series windows, alert decisions out.

Nothing here does I/O; the daemon feeds samples and the current time in and
takes :class:`~tocsin.rules.decisions.Decision` values out.
"""
