"""The benchmark's ceiling: a minimal broadcast server on aiohttp (the
fastest Python WebSocket stack measured here), with no auth, no storage, no order
or resume guarantees. ``parley bench`` runs the same load against it and reports
Parley as a ratio of it.

``GET /ws?room=NAME``; a text frame ``{"type": "send", "id", "body"}`` is framed
once as ``{"type": "event", "event": {"room_id", "seq", "message": {"body"}}}``,
written to every socket in the room, and answered with ``{"type": "ack", "id"}``.

Run: ``python -m parley.cli.bench_baseline --port 8100`` (needs ``parley[bench]``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict

from aiohttp import WSMsgType, web


def make_app() -> web.Application:
    rooms: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
    seqs: dict[str, int] = defaultdict(int)

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        room = request.query.get("room", "main")
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 16)
        await ws.prepare(request)
        members = rooms[room]
        members.add(ws)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                seqs[room] += 1
                event = json.dumps(
                    {
                        "type": "event",
                        "event": {
                            "room_id": room,
                            "seq": seqs[room],
                            "type": "message.created",
                            "message": {"body": frame.get("body", "")},
                        },
                    }
                )
                for member in tuple(members):
                    if not member.closed:
                        await member.send_str(event)
                await ws.send_str(json.dumps({"type": "ack", "id": frame.get("id")}))
        finally:
            members.discard(ws)
        return ws

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="minimal broadcast server (bench ceiling)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
