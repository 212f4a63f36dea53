"""The benchmark suite: six workloads, the engine beside raw RQ (and Celery and Dramatiq
when the `bench` extra is installed); run with `python -m bench` (see bench/README.md)."""
