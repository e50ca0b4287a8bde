"""Benchmarks of nmtrec (not installed): run by `nmtrec bench NAME` from a checkout, or `python -m benchmarks.NAME`."""
