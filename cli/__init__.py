"""The `orchestrator` command line: thin Typer modules over the Python client."""
