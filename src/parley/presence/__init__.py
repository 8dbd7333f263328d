"""Presence: who is online, idle or offline, pushed to the users who may see it.

The rules are pure (``parley.domain.presence``); this package runs them on one node
against the ``PresenceStore`` and ``Bus`` ports. The gateway calls
``PresenceService`` (see its module doc for the flow and the stated bounds).
"""

from __future__ import annotations

from parley.presence.clock import SystemClock
from parley.presence.config import PresenceConfig
from parley.presence.service import (
    PRESENCE_CHANNEL,
    Peer,
    PresenceService,
    PresenceStats,
    decode_notice,
    encode_notice,
    presence_body,
    presence_frame,
)
from parley.presence.visibility import CoMembers, Visibility, store_co_members

__all__ = [
    "PRESENCE_CHANNEL",
    "CoMembers",
    "Peer",
    "PresenceConfig",
    "PresenceService",
    "PresenceStats",
    "SystemClock",
    "Visibility",
    "decode_notice",
    "encode_notice",
    "presence_body",
    "presence_frame",
    "store_co_members",
]
