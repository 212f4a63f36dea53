"""Workflows that ship with the orchestrator, each in its own package with its tasks."""
