"""The async Python SDK for Parley: REST with token refresh, and a live connection
that reconnects, resumes and hands each event over exactly once, in order.

    async with ParleyClient("http://127.0.0.1:8000") as client:
        await client.login("alice", "password")
        async with client.live() as live:
            await live.send(room_id, "hello")
            async for event in live:
                ...

Depends on ``parley.protocol`` only (plus httpx and websockets), so bots can use
it without the server's dependencies being imported.
"""

from parley.client._errors import ApiError, AuthError, ClientError, ConnectionLost
from parley.client._live import Backoff, Live, PresenceStatus
from parley.client._rest import ParleyClient, Tokens

__all__ = [
    "ApiError",
    "AuthError",
    "Backoff",
    "ClientError",
    "ConnectionLost",
    "Live",
    "ParleyClient",
    "PresenceStatus",
    "Tokens",
]
