"""The entry points: settings, the HTTP server, the worker processes, the demo, operations."""
