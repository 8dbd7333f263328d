"""How ``parley bench --nodes`` deals clients over nodes and isolates its runs."""

from __future__ import annotations

from collections import Counter

from parley.cli.bench import Role
from parley.cli.bench_cluster import spread, with_prefix

NODES = ["http://n1", "http://n2", "http://n3"]


def roles(rooms: int, receivers: int) -> list[Role]:
    out = []
    for r in range(rooms):
        out.append(Role("sender", "t", f"room{r}", f"s{r}"))
        out.extend(Role("receiver", "t", f"room{r}", f"r{r}x{i}") for i in range(receivers))
    return out


def test_senders_and_receivers_are_dealt_round_robin() -> None:
    dealt = roles(3, 6)
    spread(dealt, NODES, apart=False)
    assert [r.url for r in dealt if r.kind == "sender"] == NODES
    per_node = Counter(r.url for r in dealt if r.kind == "receiver")
    assert per_node == dict.fromkeys(NODES, 6)


def test_apart_keeps_every_receiver_off_its_senders_node() -> None:
    dealt = roles(4, 5)
    spread(dealt, NODES, apart=True)
    sender = {r.room: r.url for r in dealt if r.kind == "sender"}
    receivers = [r for r in dealt if r.kind == "receiver"]
    assert all(r.url != sender[r.room] for r in receivers)
    assert {r.url for r in receivers} == set(NODES)


def test_apart_on_one_node_puts_everyone_there() -> None:
    dealt = roles(2, 2)
    spread(dealt, NODES[:1], apart=True)
    assert {r.url for r in dealt} == {NODES[0]}


def test_a_prefix_is_added_unless_the_url_names_one() -> None:
    assert with_prefix("redis://h:6379/0", "b1") == "redis://h:6379/0?prefix=b1"
    assert with_prefix("amqp://g:g@h:5672/?x=1", "b1") == "amqp://g:g@h:5672/?x=1&prefix=b1"
    assert with_prefix("nats://h:4222?prefix=mine", "b1") == "nats://h:4222?prefix=mine"
    assert with_prefix("memory://", "b1") == "memory://"
