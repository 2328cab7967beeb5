"""Store-and-forward for MPPS writes to an upstream backend (a durable outbox)."""

from gateway.backends.outbox.backend import RetryPolicy, StoreAndForwardBackend

__all__ = ["RetryPolicy", "StoreAndForwardBackend"]
