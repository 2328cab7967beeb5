"""The embedded SQLite store: the zero-configuration worklist and MPPS backend."""

from gateway.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
