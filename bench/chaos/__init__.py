"""Fault injection and an offline invariant checker; run with `python -m bench.chaos`.

The harness starts its own Redis (append-only), SMTP server, Prism (Twilio)
and `orchestrator worker` processes, drives the workload (workload.py)
through a client that journals every acknowledged call (journal.py), kills
worker processes by id on a schedule (pool.py, procs.py), waits until the
system is quiet, and checks everything recorded (collect.py, checker.py,
effects.py). The checker reads plain data only, so
tests/bench/test_chaos_checker.py proves it on synthetic histories.

Kept light: the workers import `bench.chaos.workload`, and so this package.
"""
