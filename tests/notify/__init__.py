"""The notification pipeline: packed jobs, rate limits, recipients, slow endpoints."""
