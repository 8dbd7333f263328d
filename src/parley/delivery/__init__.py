"""Delivery below the gateway: the bus outbox (and, as it moves here, fan-out,
ordering, sessions and replay), knowing no transport."""
