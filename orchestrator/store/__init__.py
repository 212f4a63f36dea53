"""The Redis store and its log: where instances, events and timers live.

Lives here: the key layout (keys), instances and their history (instances),
the inbox streams (inbox), partition leases (leases), timers, compressed
histories (archive), retention, dead letters, and the embedded redis-server.

May import: the core and the standard library (and redis). Never the runtime
or the entry points: the store knows how things are kept, not who runs them.
"""
