"""Backends: where worklist items and MPPS instances really live (or are forwarded to)."""
