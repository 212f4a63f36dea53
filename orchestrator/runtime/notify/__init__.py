"""The notification pipeline: from a workflow's Notify effect to a delivered,
ledgered message.

Lives here: the notification jobs (one and packed), delivery (render, rate
limit, send, record), the ledger of every notification, per-channel rate
limits, recipients and their preferences, and the schedule of sends to try
again later.

May import: the rest of the runtime's lower modules, the store, the core and
`notifiers` (the channels themselves, which know nothing of the engine).
"""
