"""The pure core: the definition language, the transition function, payload limits."""
