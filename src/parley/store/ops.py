"""The writer's unit of work: a queued write (``_Op``), and what running a batch of
them gives back (``_Committed``). Below the writer and the send path, which both
handle them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from parley.domain.models import Event
from parley.ports import SendRequest


@dataclass(slots=True, eq=False)
class _Op:
    """One queued write: either a send (vectorised with its neighbours) or ``run``."""

    future: asyncio.Future[Any]
    room_ids: tuple[str, ...] = ()
    dm_key: str | None = None
    send: SendRequest | None = None
    run: Callable[[Connection], Any] | None = None
    result: Any = None
    error: BaseException | None = None


_Committed = tuple[float, list[Event]]
"""A committed batch: the seconds it took, and the events it stored."""
