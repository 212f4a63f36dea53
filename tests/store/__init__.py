"""The Redis store: inbox, instances, leases, timers, retention; and Redis itself
(embedded, full, restarted, over TLS)."""
