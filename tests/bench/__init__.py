"""The benchmark and chaos harnesses prove themselves on tiny sizes."""
