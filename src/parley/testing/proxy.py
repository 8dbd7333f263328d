"""A TCP proxy for fault injection: put it between a node and its broker, then cut
the line and restore it, without touching the broker other tests share.

``cut()`` resets every connection through the proxy and stops listening, so new
connections are refused as by a broker that is down; ``blackhole()`` keeps every
connection open but silently drops what crosses it, as a dead network path does (only
keepalives find that); ``restore()`` ends both: it resets the connections a blackhole
starved and listens again on the same port. ``start(accepting=False)`` begins in the
cut state, for a node that boots while its broker is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._blackhole = False

    @property
    def accepting(self) -> bool:
        return self._server is not None

    async def start(self, *, accepting: bool = True) -> TcpProxy:
        """Reserve the port; listen on it now unless ``accepting`` is false."""
        if self.port == 0:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        if accepting:
            await self.restore()
        return self

    async def restore(self) -> None:
        """Forward again: new connections are accepted and carried."""
        if self._blackhole:
            self._blackhole = False
            await self._reset()
        await self._listen()

    async def blackhole(self) -> None:
        """Drop every byte in both directions, on open and new connections alike,
        without closing anything, until ``restore``."""
        self._blackhole = True
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def cut(self) -> None:
        """Reset every connection and refuse new ones until ``restore``."""
        self._blackhole = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._reset()
        if server is not None:
            await server.wait_closed()

    async def _reset(self) -> None:
        for writer in tuple(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in tuple(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst), name="parley-proxy-pipe")
            self._links.add(task)
            task.add_done_callback(self._links.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if not self._blackhole:
                    dst.write(data)
                    await dst.drain()
        except OSError:
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)
            with contextlib.suppress(Exception):
                await dst.wait_closed()
