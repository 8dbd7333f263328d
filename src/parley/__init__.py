"""Parley: a self-hosted, distributed chat server that never loses a message."""

__version__ = "0.1.0"
__all__ = ["__version__"]
