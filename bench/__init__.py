"""Benchmarks of the orchestrator against a raw RQ baseline; run with `python -m bench`."""
