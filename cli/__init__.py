"""The `orchestrator` command line: thin Typer modules over the Python client.

Start-up: `orchestrator --help`, `orchestrator COMMAND --help` and shell completion
only build the Typer app, so a command module imports at its top nothing but the
standard library, `typer` and `cli.common`. What a command uses of the engine
(`orchestrator.*`, which pulls in redis, rq, pydantic...), of `notifiers` or of
`rich` it imports inside its function, where it runs; names needed only by type
hints are imported under `if TYPE_CHECKING:`. The `App` is built on first use too
(`cli.common.app_of`). tests/cli/test_lazy_imports.py fails when a heavy module
comes back to the top of a command module.
"""
