"""What the test suite and the benchmarks both start, in one place.

Tests (tests/) and benchmarks (bench/, bench/chaos/) need the same real
servers and the same process bookkeeping: a private redis-server on a free
port (`redis_server`), an SMTP server (`smtp_server`), a stand-in for Twilio's
Messages API (`twilio_server`), Stoplight Prism serving a provider's OpenAPI
description (`prism`), a Web Push service (`push_service`), free ports
(`ports`) and a process's children (`procs`). They live here so that bench/
never imports tests/ and each of them exists once.

Nothing here is part of the shipped engine: the package is importable from
the repository root only, as tests and bench are.
"""
