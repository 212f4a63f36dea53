"""The command line, run in subprocesses."""
