"""Ids and timestamps: the text clients see, produced by the fast paths."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

from parley.domain.models import format_ts, new_id, new_message_id, utc_now


def uuids_in_canonical_text(ids: list[str], version: int) -> list[uuid.UUID]:
    """``ids`` are distinct RFC 9562 UUIDs of ``version``, each in canonical text."""
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(text) for text in ids]
    assert [str(p) for p in parsed] == ids
    assert {(p.version, p.variant) for p in parsed} == {(version, uuid.RFC_4122)}
    return parsed


def test_new_id_is_a_random_uuid4_in_canonical_text() -> None:
    ids = [new_id() for _ in range(2000)]
    uuids_in_canonical_text(ids, 4)
    # every variant digit and every hex digit turns up: the bytes are not fixed
    assert {text[19] for text in ids} == set("89ab")
    assert set("".join(ids).replace("-", "")) == set("0123456789abcdef")


def test_new_message_id_is_a_uuid7_of_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_message_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    for parsed in uuids_in_canonical_text(ids, 7):
        assert before <= parsed.int >> 80 <= after
    assert {text[19] for text in ids} == set("89ab")
    assert len({text[24:] for text in ids}) == len(ids)  # the tail is random


def test_message_ids_made_in_later_milliseconds_sort_after() -> None:
    first = new_message_id()
    time.sleep(0.002)
    second = new_message_id()
    assert first < second


def test_utc_now_is_format_ts_of_the_current_time() -> None:
    before = datetime.now(UTC)
    now = utc_now()
    after = datetime.now(UTC)
    assert format_ts(before) <= now <= format_ts(after)
    parsed = datetime.strptime(now, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert format_ts(parsed) == now
    assert after - parsed < timedelta(seconds=1)


def test_format_ts_is_rfc3339_utc_with_microseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    for moment in (
        datetime(2026, 11, 28, 19, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 28, 21, 0, 0, 5, tzinfo=plus_two),
    ):
        expected = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert format_ts(moment) == expected
    assert (
        format_ts(datetime(2026, 11, 28, 21, 0, tzinfo=plus_two)) == "2026-11-28T19:00:00.000000Z"
    )
