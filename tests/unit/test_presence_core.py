"""The pure presence core, driven by hand: times are numbers, frames are bytes, and
nothing awaits. (``test_presence_rules.py`` covers ``aggregate`` and ``effective``.)"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.domain import presence as rules
from parley.domain.models import RoomId, UserId

IDLE_AFTER = 300.0
A, B = UserId("alice"), UserId("bob")
ROOM = RoomId("r1")


class TestAggregate:
    def test_best_status_orders_online_idle_offline(self) -> None:
        assert rules.best_status([]) == rules.OFFLINE
        assert rules.best_status([rules.IDLE, rules.OFFLINE]) == rules.IDLE
        assert rules.best_status([rules.IDLE, rules.ONLINE, rules.OFFLINE]) == rules.ONLINE

    def test_two_devices_one_idle_by_choice_one_active(self) -> None:
        phone = rules.ConnState(rules.IDLE, 100.0)
        laptop = rules.ConnState(rules.ONLINE, 50.0)
        assert rules.aggregate([phone, laptop], 200.0, IDLE_AFTER) == rules.Presence(
            rules.ONLINE, 100.0
        )
        assert rules.aggregate([phone], 200.0, IDLE_AFTER).status == rules.IDLE

    def test_idle_by_inactivity_counts_from_the_last_activity(self) -> None:
        conn = rules.ConnState(rules.ONLINE, 1000.0)
        assert rules.effective(conn, 1000.0 + IDLE_AFTER - 0.01, IDLE_AFTER) == rules.ONLINE
        assert rules.effective(conn, 1000.0 + IDLE_AFTER, IDLE_AFTER) == rules.IDLE
        assert rules.idle_at(conn, IDLE_AFTER) == 1000.0 + IDLE_AFTER

    def test_offline_user_keeps_the_remembered_last_activity(self) -> None:
        gone = rules.aggregate([], 5000.0, IDLE_AFTER, last_seen=4000.0)
        assert gone == rules.Presence(rules.OFFLINE, 4000.0)
        # A remembered time later than every live entry wins (another device, gone).
        live = rules.aggregate([rules.ConnState(rules.ONLINE, 4750.0)], 5000.0, IDLE_AFTER, 4800.0)
        assert live == rules.Presence(rules.ONLINE, 4800.0)

    def test_quick_reconnect_within_grace_keeps_the_user_online(self) -> None:
        """The old entry lingers ``grace`` seconds after the close; the reload's
        entry exists before it lapses, so at no instant is the user offline."""
        grace, closed_at, reopened_at = 10.0, 1000.0, 1002.0
        old = rules.ConnState(rules.ONLINE, 990.0)
        new = rules.ConnState(rules.ONLINE, reopened_at)

        def live(now: float) -> list[rules.ConnState]:
            return [old] * (now < closed_at + grace) + [new] * (now >= reopened_at)

        for step in range(400):
            now = closed_at + step / 10
            assert rules.aggregate(live(now), now, IDLE_AFTER).status == rules.ONLINE
        # Without the reconnect, offline exactly when the grace ends.
        assert rules.aggregate([], closed_at + grace, IDLE_AFTER).status == rules.OFFLINE

    def test_expiry_and_bound_arithmetic(self) -> None:
        assert rules.entry_ttl(20.0, 10.0) == 50.0
        assert rules.offline_bound(20.0, 10.0, 0.5, 1.0) == 52.0

    def test_format_epoch_is_rfc3339_utc(self) -> None:
        assert rules.format_epoch(None) is None
        assert rules.format_epoch(0.25) == "1970-01-01T00:00:00.250000Z"


class TestCoalescing:
    def test_next_send(self) -> None:
        assert rules.next_send_at(None, 5.0, 1.0) == 5.0
        assert rules.next_send_at(5.0, 5.2, 1.0) == 6.0
        assert rules.next_send_at(5.0, 6.0, 1.0) == 6.0

    def subs(self, *names: str, limit: int = 1000) -> rules.Subscriptions:
        s = rules.Subscriptions(interval=1.0, limit=limit)
        for name in names:
            s.add(name, [A])
            s.answered(name, A, rules.OFFLINE)
        return s

    def test_first_change_goes_at_once_to_every_subscriber_with_one_frame(self) -> None:
        s = self.subs("c1", "c2")
        frame = b"online-frame"
        assert sorted(s.publish(A, rules.ONLINE, frame, 10.0)) == ["c1", "c2"]
        assert s.due(100.0) == []

    def test_a_burst_yields_one_update_per_interval_with_the_latest_state(self) -> None:
        s = self.subs("c1")
        sent: list[tuple[float, bytes]] = []
        now = 10.0
        for i in range(20):  # flip every 0.1 s for 2 s
            key = rules.ONLINE if i % 2 == 0 else rules.IDLE
            sent += [(now, b"") for _ in s.publish(A, key, key.encode(), now)]
            sent += [(now, f) for _, f in s.due(now)]
            now += 0.1
        for _ in range(30):
            sent += [(now, f) for _, f in s.due(now)]
            now += 0.1
        times = [t for t, _ in sent]
        assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times))
        assert len(sent) <= 3
        # The last frame the subscriber got is the final state (idle).
        assert sent[-1][1] == b"idle"

    def test_a_state_that_comes_back_within_the_interval_sends_nothing(self) -> None:
        s = self.subs("c1")
        assert s.publish(A, rules.ONLINE, b"on", 10.0) == ["c1"]
        assert s.publish(A, rules.IDLE, b"idle", 10.2) == []
        assert s.publish(A, rules.ONLINE, b"on", 10.4) == []
        assert s.due(11.0) == []
        assert s.next_due() is None

    def test_pending_answer_is_never_overtaken(self) -> None:
        s = rules.Subscriptions(interval=1.0)
        assert s.add("c1", [A, B]) == [A, B]
        assert s.publish(A, rules.ONLINE, b"on", 10.0) == []  # answer not sent yet
        assert s.answered("c1", A, rules.ONLINE)
        assert s.publish(A, rules.IDLE, b"idle", 10.5) == ["c1"]
        assert s.publish(A, rules.ONLINE, b"on", 10.6) == []
        assert s.due(11.4) == []
        assert s.due(11.5) == [("c1", b"on")]

    def test_each_subscriber_has_its_own_window(self) -> None:
        s = self.subs("old")
        assert s.publish(A, rules.ONLINE, b"on", 10.0) == ["old"]
        s.add("new", [A])
        s.answered("new", A, rules.ONLINE)  # the answer starts no interval
        assert s.publish(A, rules.IDLE, b"idle", 10.5) == ["new"]
        assert s.due(10.9) == []
        assert s.due(11.0) == [("old", b"idle")]
        assert s.publish(A, rules.ONLINE, b"on", 11.2) == []
        assert sorted(s.due(12.0)) == [("new", b"on"), ("old", b"on")]

    def test_bounded_and_all_or_nothing(self) -> None:
        s = rules.Subscriptions(limit=3)
        assert s.add("c", ["u1", "u2"]) == ["u1", "u2"]
        assert s.fits("c", ["u2", "u3"]) and not s.fits("c", ["u3", "u4"])
        with pytest.raises(rules.SubscriptionLimit):
            s.add("c", ["u3", "u4"])
        assert s.watching("c") == {"u1", "u2"}
        assert s.add("c", ["u1", "u3"]) == ["u3"]

    def test_remove_and_drop_report_users_nobody_watches(self) -> None:
        s = rules.Subscriptions()
        s.add("c1", ["u1", "u2"])
        s.add("c2", ["u2"])
        assert s.remove("c1", ["u2", "unknown"]) == []
        assert s.drop("c1") == ["u1"]
        assert s.watched() == ["u2"] and s.watchers("u2") == ["c2"]
        assert s.drop("c2") == ["u2"] and s.watched() == []

    @given(st.lists(st.tuples(st.floats(0, 0.5), st.booleans()), max_size=60))
    def test_never_more_than_one_update_per_interval(self, steps: list[tuple[float, bool]]) -> None:
        s = self.subs("c1")
        now, last = 0.0, None
        for gap, online in steps:
            now += gap
            key = rules.ONLINE if online else rules.IDLE
            got = ["c1" for _ in s.publish(A, key, key.encode(), now)]
            got += [sub for sub, _ in s.due(now)]
            assert len(got) <= 1
            if got:
                assert last is None or now - last >= 1.0 - 1e-9
                last = now


class TestTyping:
    def test_throttle_then_forward_again(self) -> None:
        t = rules.TypingTracker(throttle=3.0, ttl=6.0)
        assert t.typing(ROOM, A, 0.0)
        assert not t.typing(ROOM, A, 1.0)
        assert not t.typing(ROOM, A, 2.9)
        assert t.typing(ROOM, A, 3.0)
        assert t.typing(ROOM, B, 3.1)  # per user

    def test_expires_without_refresh(self) -> None:
        t = rules.TypingTracker(throttle=3.0, ttl=6.0)
        t.typing(ROOM, A, 0.0)
        t.typing(ROOM, A, 2.0)  # a refresh, not forwarded
        assert t.typers(ROOM, 7.9) == [A]
        assert t.typers(ROOM, 8.0) == []
        assert t.sweep(8.0) == 1 and t.typers(ROOM, 8.0) == []

    def test_a_sent_message_ends_typing_and_resets_the_throttle(self) -> None:
        t = rules.TypingTracker()
        assert t.typing(ROOM, A, 0.0)
        t.stopped(ROOM, A)
        assert t.typers(ROOM, 0.5) == []
        assert t.typing(ROOM, A, 0.5)

    def test_ttl_below_throttle_is_refused(self) -> None:
        with pytest.raises(ValueError, match="ttl"):
            rules.TypingTracker(throttle=3.0, ttl=1.0)
