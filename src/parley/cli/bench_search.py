"""``parley bench search``: search over many stored messages, on SQLite and PostgreSQL.

What it does, per database (SQLite in a temp dir; PostgreSQL in a database of the
run's own beside ``--database-url``'s, dropped afterwards; default: the local server):

1. Load ``--search-messages`` messages in ``--search-rooms`` rooms (100 users, each message from one
   of its room's members) by bulk inserts through the store's own code: bodies sealed
   by the key ring, terms hashed and indexed by ``parley.store.search.index_messages``,
   in transactions of 5,000 run by the store's writer. The room's events are not
   written (search never reads them), so the load takes minutes, not hours.
   Bodies: 8-20 words drawn from a Zipf-distributed vocabulary of 30,000 made-up
   words; one in ten is Japanese-like text drawn from 2,000 CJK characters.
2. Query latency, server side: ``parley.service.search.search`` (parse, hash, one
   statement, open each hit's body, highlight), first page of 20, for one-word,
   two-word, phrase and CJK queries (words of middling frequency; phrases and CJK
   substrings cut from stored messages), by a user who is a member of
   ``--searcher-rooms`` rooms. ``--queries`` of each kind a run, three runs: p50 and
   p99 per run and their medians.
3. Sizes: the messages table (with its indexes) against the search index (SQLite:
   ``dbstat``; PostgreSQL: ``pg_total_relation_size``).
4. The cost added to a send: 50 concurrent senders through ``send_message`` (group
   commit), the node process's CPU per send with indexing and with the indexing call
   replaced by a no-op, alternated three times each in the same run, medians. On
   PostgreSQL the database server's own CPU is not counted.

Results go to ``--out`` as JSON and a PNG (latency per kind and database).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from parley.domain.models import RoomId, RoomKind, UserId, Visibility, new_id, utc_now
from parley.ports import SendRequest
from parley.service.search import search
from parley.store import SqlStore, migrate
from parley.store import sends as sends_module
from parley.store.crypto import KeyRing, _ring, seal_body
from parley.store.search import index_messages
from parley.store.sends import _new_message
from parley.store.statements import _RAW_INSERT_MESSAGES

KINDS = ("one-word", "two-word", "phrase", "cjk")
VOCABULARY = 30_000
CJK_CHARS = 2_000
LOAD_CHUNK = 5_000
USERS = 100
MEMBERS_PER_ROOM = 10


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    return sorted(words, key=lambda w: rng.random())


class Corpus:
    """Deterministic message bodies with Zipf-like word frequencies."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.words = _vocabulary(self.rng)
        self.cjk = [chr(0x4E00 + i * 7) for i in range(CJK_CHARS)]
        self._word_weights = list(itertools.accumulate(1 / (i + 1) for i in range(VOCABULARY)))
        self._cjk_weights = list(itertools.accumulate(1 / (i + 1) for i in range(CJK_CHARS)))

    def bodies(self, n: int) -> Iterator[str]:
        rng = self.rng
        for _ in range(n):
            if rng.random() < 0.1:
                chars = rng.choices(self.cjk, cum_weights=self._cjk_weights, k=rng.randint(8, 30))
                yield "".join(chars)
            else:
                yield " ".join(
                    rng.choices(self.words, cum_weights=self._word_weights, k=rng.randint(8, 20))
                )

    def middling_word(self) -> str:
        return self.words[self.rng.randint(50, 5_000)]


async def _setup(store: SqlStore, rooms: int) -> tuple[list[UserId], dict[str, list[str]]]:
    users = [
        (await store.create_user(f"b{i}-{uuid.uuid4().hex[:6]}", "x", f"B{i}")).id
        for i in range(USERS)
    ]
    members: dict[str, list[str]] = {}
    for r in range(rooms):
        owner = users[r % USERS]
        room, _ = await store.create_room(
            name=f"r{r}", visibility=Visibility.PUBLIC, topic="", kind=RoomKind.ROOM,
            owner_id=UserId(owner),
        )  # fmt: skip
        others = [users[(r + k * 7 + 1) % USERS] for k in range(MEMBERS_PER_ROOM - 1)]
        for other in others:
            await store.join_room(room.id, UserId(other))
        members[room.id] = [owner, *others]
    return users, members


def _load_chunk(conn: Connection, chunk: list[tuple[str, str, str, int]], now: str) -> None:
    """Messages ``(room, sender, body, seq)`` inserted and indexed as a send does."""
    rows = []
    for room, sender, body, seq in chunk:
        _, row, _ = _new_message(SendRequest(RoomId(room), UserId(sender), body, None), seq, now)
        rows.append(row)
    bodies = [(row["id"], row["room_id"], row["body"]) for row in rows]
    ring = _ring(conn)
    for row in rows:
        row["key_id"], row["body"] = seal_body(ring, row["room_id"], row["id"], row["body"])
    _RAW_INSERT_MESSAGES.executemany(conn, rows)
    index_messages(conn, bodies)


def _set_heads(conn: Connection, heads: dict[str, int]) -> None:
    conn.execute(
        text("UPDATE rooms SET last_seq = :seq WHERE id = :room"),
        [{"room": r, "seq": s} for r, s in heads.items()],
    )


async def load(
    store: SqlStore, corpus: Corpus, members: dict[str, list[str]], n: int
) -> dict[str, Any]:
    """``n`` messages spread evenly over the rooms; what it cost."""
    rooms = list(members)
    room = await store.get_room(RoomId(rooms[0]))
    assert room is not None
    heads = dict.fromkeys(rooms, MEMBERS_PER_ROOM + 1)
    rng = random.Random(11)
    started = time.perf_counter()
    chunk: list[tuple[str, str, str, int]] = []
    done = 0
    # The store's writer runs each chunk in its own transaction, with the key ring.
    writer = store._writer  # a benchmark's bulk path
    for i, body in enumerate(corpus.bodies(n)):
        r = rooms[i % len(rooms)]
        heads[r] += 1
        chunk.append((r, rng.choice(members[r]), body, heads[r]))
        if len(chunk) == LOAD_CHUNK or i == n - 1:
            now = utc_now()
            batch = chunk
            await writer.write(lambda conn, b=batch, t=now: _load_chunk(conn, b, t))  # type: ignore[misc]
            done += len(chunk)
            chunk = []
            if done % 100_000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  loaded {done:,} ({rate:,.0f}/s)", file=sys.stderr)
    await writer.write(lambda conn: _set_heads(conn, heads))
    seconds = time.perf_counter() - started
    return {"messages": n, "seconds": seconds, "per_second": n / seconds}


async def _samples(store: SqlStore, corpus: Corpus, k: int) -> dict[str, list[str]]:
    """Queries of each kind; phrases and CJK substrings cut from stored messages."""
    rng = random.Random(5)
    words = [b for b in corpus.bodies(k * 20) if b.isascii()]
    cjk = [b for b in corpus.bodies(k * 40) if not b.isascii()]
    queries: dict[str, list[str]] = {
        "one-word": [corpus.middling_word() for _ in range(k)],
        "two-word": [f"{corpus.middling_word()} {corpus.words[rng.randint(0, 300)]}"
                     for _ in range(k)],
        "phrase": [],
        "cjk": [],
    }  # fmt: skip
    for body in words[:k]:
        split = body.split()
        at = rng.randrange(len(split) - 1)
        queries["phrase"].append(f'"{split[at]} {split[at + 1]}"')
    for body in cjk[:k]:
        at = rng.randrange(len(body) - 3)
        queries["cjk"].append(body[at : at + rng.choice((2, 3))])
    return queries


async def measure_queries(
    store: SqlStore, searcher: str, queries: dict[str, list[str]], runs: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        p50s, p99s, hits = [], [], []
        samples: list[float] = []
        for _ in range(runs):
            times = []
            for q in queries[kind]:
                t0 = time.perf_counter()
                page = await search(store, UserId(searcher), q, limit=20)
                times.append((time.perf_counter() - t0) * 1000)
                hits.append(len(page["results"]))
            times.sort()
            p50s.append(statistics.median(times))
            p99s.append(times[min(len(times) - 1, int(len(times) * 0.99))])
            samples = times
        out[kind] = {
            "p50_ms": statistics.median(p50s),
            "p99_ms": statistics.median(p99s),
            "runs_p50_ms": p50s,
            "runs_p99_ms": p99s,
            "mean_results": statistics.mean(hits),
            "_last_run_ms": samples,
        }
        print(f"  {kind:9} p50 {out[kind]['p50_ms']:.1f} ms, p99 {out[kind]['p99_ms']:.1f} ms",
              file=sys.stderr)  # fmt: skip
    return out


async def sizes(store: SqlStore, postgres: bool) -> dict[str, int]:
    """Bytes of the messages table against the search index's tables."""

    def run(conn: Connection) -> dict[str, int]:
        if postgres:
            q = "SELECT pg_total_relation_size('messages'), pg_total_relation_size('search_docs')"
            table, index = conn.execute(text(q)).one()
            return {"messages_bytes": int(table), "search_index_bytes": int(index)}
        rows = conn.execute(text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")).all()
        by = {str(name): int(size) for name, size in rows}
        messages = sum(v for k, v in by.items() if k == "messages" or "_messages_" in k)
        index = sum(
            v for k, v in by.items() if k.startswith(("search_", "sqlite_autoindex_search"))
        )
        return {"messages_bytes": messages, "search_index_bytes": index}

    return await store._read(run)


async def send_cost(
    store: SqlStore, members: dict[str, list[str]], corpus: Corpus, per_run: int, runs: int
) -> dict[str, Any]:
    """Node CPU per send with and without the indexing call, alternated."""
    rooms = list(members)[:50]
    bodies = list(corpus.bodies(per_run))
    names = vars(sends_module)
    real = names["index_messages"]

    async def one_run() -> float:
        async def sender(k: int) -> None:
            room = rooms[k]
            for i in range(k, per_run, len(rooms)):
                await store.send_message(SendRequest(RoomId(room), UserId(members[room][0]),
                                                     bodies[i], new_id()))  # fmt: skip

        t0 = time.process_time()
        await asyncio.gather(*(sender(k) for k in range(len(rooms))))
        return (time.process_time() - t0) * 1e6 / per_run

    with_index: list[float] = []
    without: list[float] = []
    try:
        await one_run()  # warm up
        for _ in range(runs):
            names["index_messages"] = real
            with_index.append(await one_run())
            names["index_messages"] = lambda conn, bodies: 0
            without.append(await one_run())
    finally:
        names["index_messages"] = real
    a, b = statistics.median(with_index), statistics.median(without)
    print(f"  send CPU: {a:.0f} µs indexed, {b:.0f} µs not (+{(a / b - 1) * 100:.0f}%)",
          file=sys.stderr)  # fmt: skip
    return {
        "cpu_us_per_send_indexed": a,
        "cpu_us_per_send_unindexed": b,
        "added_fraction": a / b - 1,
        "runs_indexed": with_index,
        "runs_unindexed": without,
        "sends_per_run": per_run,
    }


async def bench_one(url: str, postgres: bool, args: argparse.Namespace) -> dict[str, Any]:
    await migrate(url)
    ring = KeyRing(bytes(range(32)))
    store = SqlStore(url, keys=ring, reseal=False)
    await store.start()
    try:
        corpus = Corpus()
        _, members = await _setup(store, args.search_rooms)
        loaded = await load(store, corpus, members, args.search_messages)
        first = next(iter(members))
        searcher = members[first][0]
        for room in list(members)[1 : args.searcher_rooms]:
            if searcher not in members[room]:
                await store.join_room(RoomId(room), UserId(searcher))
        mine = await store.user_room_ids(UserId(searcher))
        if postgres:
            await store._writer.write(lambda c: c.execute(text("ANALYZE")))
        queries = await _samples(store, corpus, args.queries)
        result: dict[str, Any] = {
            "load": loaded,
            "searcher_rooms": len(mine),
            "queries": await measure_queries(store, searcher, queries, 3),
            "sizes": await sizes(store, postgres),
            "send_cost": await send_cost(store, members, corpus, args.send_messages, 3),
        }
        s = result["sizes"]
        s["index_to_table"] = s["search_index_bytes"] / max(1, s["messages_bytes"])
        return result
    finally:
        await store.close()


@contextlib.contextmanager
def _database(kind: str, args: argparse.Namespace) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="parley-bench-search-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'parley.db'}"
        return
    from parley.testing.postgres import fresh_database

    server = args.database_url or "postgresql://postgres@127.0.0.1:5432/postgres"
    with fresh_database(server, "parley_bench_search") as url:
        yield url


def run(args: argparse.Namespace) -> int:
    """``parley bench search``."""
    report: dict[str, Any] = {
        "scenario": "search",
        "options": {
            "messages": args.search_messages,
            "rooms": args.search_rooms,
            "queries": args.queries,
            "searcher_rooms": args.searcher_rooms,
            "send_messages": args.send_messages,
            "databases": args.databases,
        },
        "databases": {},
    }
    for kind in args.databases.split(","):
        print(
            f"{kind}: {args.search_messages:,} messages in {args.search_rooms:,} rooms",
            file=sys.stderr,
        )
        with _database(kind, args) as url:
            report["databases"][kind] = asyncio.run(bench_one(url, kind == "postgres", args))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"search-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    clean = json.loads(json.dumps(report, default=str))
    for db in clean["databases"].values():
        for kind in KINDS:
            db["queries"][kind].pop("_last_run_ms", None)
    stem.with_suffix(".json").write_text(json.dumps(clean, indent=2))
    plotted = write_plot(stem.with_suffix(".png"), report)
    print(json.dumps(clean["databases"], indent=1))
    print(f"wrote {stem}.json" + (f" and {stem}.png" if plotted else ""), file=sys.stderr)
    return 0


def write_plot(path: Path, report: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    dbs = report["databases"]
    fig, axes = plt.subplots(1, len(dbs), figsize=(6 * len(dbs), 4.5), squeeze=False)
    for ax, (name, db) in zip(axes[0], dbs.items(), strict=True):
        data = [db["queries"][k]["_last_run_ms"] for k in KINDS]
        ax.boxplot(data, tick_labels=list(KINDS), whis=(1, 99))
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms), whiskers p1-p99")
        ax.set_title(f"{name}: {report['options']['messages']:,} messages")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
