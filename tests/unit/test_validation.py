"""Input rules: the control-character check agrees with Unicode's categories."""

from __future__ import annotations

import unicodedata

import pytest

from parley.domain import validation
from parley.errors import InvalidInput

# Every code point of the first planes' interesting ranges, and the surrogates.
CODE_POINTS = [*range(0x0000, 0x3000), *range(0xD7F0, 0xE010), 0xFEFF, 0x10FFFF]


# Invisible characters that reorder or hide text, refused in names (not in topics):
# bidi marks, embeddings, overrides and isolates, zero-width space, word joiner and
# invisible operators, the BOM, the Mongolian vowel separator.
INVISIBLE = {
    0x061C,
    0x180E,
    0x200B,
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2060, 0x2065),
    *range(0x2066, 0x206A),
    0xFEFF,
}


@pytest.mark.parametrize("allow_newlines", [True, False])
def test_controls_are_exactly_cc_and_cs(allow_newlines: bool) -> None:
    """Names (``allow_newlines=False``) also refuse the invisible characters."""
    for cp in CODE_POINTS:
        ch = chr(cp)
        newline = allow_newlines and ch in "\n\t\r"
        invisible = not allow_newlines and cp in INVISIBLE
        expected = invisible or (not newline and unicodedata.category(ch) in ("Cc", "Cs"))
        try:
            validation.check_topic(f"a{ch}b") if allow_newlines else validation.check_room_name(
                f"a{ch}b"
            )
        except InvalidInput:
            refused = True
        else:
            refused = False
        assert refused == expected, hex(cp)


def test_body_keeps_newlines_and_tabs_but_not_other_controls() -> None:
    assert validation.check_body("line\n\tnext\r\n", 100) == "line\n\tnext\r\n"
    for bad in ("\x00", "\x1b[31m", "\x7f", "\x85", "\ud800"):
        with pytest.raises(InvalidInput):
            validation.check_body(f"x{bad}y", 100)
