"""Simulated PBX provider (`type = "simulator"`): realistic traffic on an injectable clock."""
