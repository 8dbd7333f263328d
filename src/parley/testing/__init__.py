"""Helpers for testing Parley and things built on it: a real server on a free port."""
