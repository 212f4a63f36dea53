"""A library of notification channels: email, SMS, Web Push, webhook and the console.

Each channel is one small notifier (notifiers.base) that takes a rendered Message
and returns a Delivery or raises a typed error (notifiers.errors); the registry
(notifiers.registry) builds a process's notifiers from the settings it is given.
Templates render in a sandbox with bounds on size and CPU (notifiers.templates,
notifiers.sandbox); the HTTP channels read an answer one way (notifiers.http).

It imports nothing of the engine (orchestrator, cli, workflows), reads no
environment variable itself (the HTTP clients it uses still find proxies and CA
bundles there, as they do in any program) and keeps no module-global registry:
the engine's notification pipeline (orchestrator.runtime.notify) uses it, as any
program could.
"""
