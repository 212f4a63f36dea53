"""The entry points: where a process starts and the outside world comes in.

Lives here: the composition root (settings read once at start-up, the Redis
connection, `bootstrap` building the App), the Python client, the HTTP
server, the worker processes (applier and RQ workers under a supervisor), the
demo, and the notification admin commands.

May import: every layer below (runtime, store, core) and `notifiers`. Only
the CLI (`cli/`) and user code import this layer.
"""
