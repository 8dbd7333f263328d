"""Authentication: password hashing and tokens."""
