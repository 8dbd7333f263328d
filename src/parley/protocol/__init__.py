"""The wire protocol, sans I/O: frames, their codec and validation. No asyncio, no
sockets, no ``parley.*`` imports, so the client SDK and the server share it."""
