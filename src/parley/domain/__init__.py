"""Rooms, messages, sequencing and permissions: plain code with no I/O."""
