"""The hand-built text frame header against the websockets library's own."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from parley.gateway.direct import text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_matches_the_library(size: int) -> None:
    payload = b"x" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)
