"""Security: encryption at rest (crypto), retention and erasure (retention)."""
