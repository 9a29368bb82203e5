"""FreeSWITCH provider (ESL inbound): `adapter.py` does the I/O, `wire.py` the pure parsing."""
