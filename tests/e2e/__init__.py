"""End to end: bundled workflows, sagas and notifications through real workers."""
