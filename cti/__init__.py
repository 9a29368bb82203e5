"""CTI middleware."""
