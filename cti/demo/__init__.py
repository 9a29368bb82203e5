"""The demo: a seeded world (seed.py) and the one-process runner (run.py)."""
