"""The ``parley`` command: serve, admin, the chat client and the benchmark."""
