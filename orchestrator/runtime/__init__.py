"""The runtime: what runs inside the engine's processes.

Lives here: the applier (reads the inbox, applies the pure transition,
commits each batch in one MULTI/EXEC), dispatch (effects become RQ jobs),
the task jobs the workers run, the guard that refuses forged jobs, the job
payloads, the watchdog for lost work, the workflow registry, and the
notification pipeline in `runtime.notify` (delivery, ledger, rate limits,
recipients, retries later, the notification jobs).

May import: the store, the core and `notifiers` (the channel library). Never
the entry points: a process is composed above this layer, and hands the
runtime what it needs.
"""
