"""Asterisk provider (ARI): `adapter.py` does the I/O, `wire.py` the pure parsing."""
