"""The runtime: the applier, task jobs and their guard, lost work, poison entries, expiry."""
