"""The contracts of the whole: import layers and the pinned public API."""
