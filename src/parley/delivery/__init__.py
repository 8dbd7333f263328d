"""Delivery below the gateway, knowing no transport: an event framed once
(``fanout``), a connection's cursors and bounded queue (``session``), a room's
ordering and recent events (``channel``), and the bus outbox (``outbox``). The
hub (``parley.gateway.hub``) registers sessions, wires the bus and repairs; the
WebSocket and SSE transports frame and write what the sessions hold."""
