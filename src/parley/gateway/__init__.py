"""The gateway: the ASGI app with REST routes, the WebSocket and SSE pumps, fan-out
and shutdown. With ``cli`` it is the only place that wires everything together."""
