"""Schemathesis over ``/openapi.json``: every operation, authenticated, all four
phases (examples, coverage, fuzzing, stateful with inferred links) and every
check (``--checks all``): no 5xx, no answer the document does not describe, no
schema-valid request refused and no schema-invalid one accepted. Afterwards
nothing was logged at ERROR or with a traceback, and the same user's WebSocket
still gets a send acked and its event delivered.

Path ids are fixed to real rooms, messages and users (per operation where one
operation would spoil another's: leaving, deleting), so cases reach the handlers
instead of stopping at 404; the stateful phase also follows ids from answers.
Bounded: a fixed seed, one worker, ``MAX_EXAMPLES`` cases per operation and
phase: ~1,000 cases in ~10 s here, the same count run after run. The case counts
are printed. From 25 examples up, the stateful phase reports one ST201 whose
report itself calls it a "positive test case": a link put a real id where the
mutated value was (schemathesis issue 2983's family), not a server fault. Such
reports, and only when every ST201 printed is one, are set aside
(``without_positive_st201``): which operations the stateful phase reaches, and so
whether one shows up at 10 examples, changes with every operation added.

A second, small run with rate limits on checks that 429 answers, and their
``Retry-After``, are what the document says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.cli.main import main as parley
from parley.testing.server import ServerThread
from tests.realtime_support import TIMEOUT, recv, send_frame, ws_connect

MAX_EXAMPLES = 10
SEED = 20261206
PASSWORD = "correct horse battery"


class Problems(logging.Handler):
    """Records at ERROR or with a traceback, from any logger it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture
def problems() -> Iterator[list[logging.LogRecord]]:
    handler = Problems()
    loggers = [logging.getLogger(name) for name in ("parley", "uvicorn.error", "uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


def register(http: httpx.Client, prefix: str) -> tuple[str, str]:
    """A new user: its id and an access token (its username is ``prefix`` + 10)."""
    username = f"{prefix}{uuid.uuid4().hex[:10]}"
    r = http.post("/api/v1/auth/register", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r2 = http.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": PASSWORD},
    )
    assert r2.status_code == 200, r2.text
    return r.json()["user"]["id"], r2.json()["access_token"]


def toml(value: Any) -> str:
    """A TOML value (JSON's strings, numbers, booleans and arrays are TOML's)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


# Schemathesis's default for negative_data_rejection, and 413: a message body over
# the limit is refused as too large (JSON Schema counts characters, the limit is
# bytes of UTF-8: the document's maxLength is the nearest it can say).
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


SEARCH_OK = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]


def config(
    headers: dict[str, str], parameters: dict[str, str], per_operation: list[dict[str, Any]]
) -> str:
    """A ``schemathesis.toml``: shared path ids, and the operations that need their own."""
    lines = [
        "workers = 1",
        f"seed = {SEED}",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        'database = "none"',
        "[checks.negative_data_rejection]",
        f"expected-statuses = {toml(REJECTIONS)}",
        "[headers]",
        *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in headers.items()),
        "[parameters]",
        *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in parameters.items()),
    ]
    for operation in per_operation:
        lines += ["[[operations]]", *(f"{json.dumps(k)} = {toml(v)}" for k, v in operation.items())]
    return "\n".join(lines) + "\n"


def run_schemathesis(url: str, workdir: Path, toml_text: str, *extra: str) -> dict[str, Any]:
    """``st run --checks all`` against ``url``; its JSON report."""
    (workdir / "schemathesis.toml").write_text(toml_text)
    report = workdir / "report.json"
    args = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(workdir / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *extra,
    ]
    done = subprocess.run(
        args, cwd=workdir, capture_output=True, text=True, timeout=600, check=False
    )
    print(done.stdout)
    assert report.exists(), done.stderr[-5000:]
    result: dict[str, Any] = json.loads(report.read_text())
    result["stdout"] = done.stdout
    return result


def without_positive_st201(report: dict[str, Any]) -> dict[str, Any]:
    """The report less the stateful phase's ST201 failures that schemathesis itself
    calls a "positive test case" (a link put a real id where the mutated value was:
    see the module's doc), when every ST201 it printed is one; anything else stays."""
    failures = report["failures"]
    printed = report["stdout"].count("- ST201 Schema-violating request accepted")
    positive = report["stdout"].count("Invalid component: positive test case")
    known = [
        f
        for f in failures
        if f["code"] == "ST201" and f["operations"] == ["Stateful tests"] and f["count"] == printed
    ]
    if not known or printed != positive:
        return report
    phases = dict(report["phases"])
    if len(known) == len(failures):
        phases["stateful"] = {**phases["stateful"], "status": "success"}
    exit_code = 0 if len(known) == len(failures) else report["exit_code"]
    rest = [f for f in failures if f not in known]
    return {**report, "failures": rest, "phases": phases, "exit_code": exit_code}


def assert_clean(report: dict[str, Any]) -> None:
    """No check failed, nothing errored, and every operation was reached."""
    assert report["failures"] == [], report["failures"]
    assert report["errors"] == [], report["errors"]
    assert report["test_cases"]["errored"] == 0, report["test_cases"]
    assert report["operations"]["errored"] == 0, report["operations"]
    assert report["exit_code"] == 0, report
    warnings = {k: v for k, v in report["warnings"].items() if v}
    # Generated credentials are refused (400 invalid_grant, RFC 6749 section 5.2):
    # no generator guesses a password, and that is the point. Most random strings are
    # not search queries either (no letter or digit, an unclosed quote): 400.
    # Generated user ids name nobody: a direct room with them is 404 (no link fills a
    # group's list).
    allowed = {
        "validation_mismatch": {"GET /api/v1/search", "POST /api/v1/auth/token"},
        "missing_test_data": {"POST /api/v1/dms"},
    }
    assert set(warnings) <= set(allowed), report["warnings"]
    for kind, operations in warnings.items():
        assert set(operations) <= allowed[kind], report["warnings"]


async def probe(url: str, token: str, room_id: str) -> None:
    """A send on a fresh WebSocket of the user: its ack, and its event delivered."""
    ws = await ws_connect(url, token)
    try:
        ready = await recv(ws)
        assert ready["type"] == "ready", ready
        body = f"after the fuzzer {uuid.uuid4().hex}"
        await send_frame(ws, type="send", id="probe", room_id=room_id, body=body)
        acked = delivered = False
        async with asyncio.timeout(TIMEOUT):
            while not (acked and delivered):
                frame = await recv(ws)
                assert frame["type"] != "error", frame
                if frame["type"] == "ack" and frame.get("id") == "probe":
                    acked = frame["message"]["body"] == body
                if frame["type"] == "event" and frame["event"].get("room_id") == room_id:
                    delivered = delivered or body in json.dumps(frame["event"])
    finally:
        await ws.close()


@pytest.mark.timeout(600)
def test_schemathesis_all_checks(tmp_path: Path, problems: list[logging.LogRecord]) -> None:
    with ServerThread(tmp_path / "data", rate_limits="off") as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        _, token = register(http, "stadmin")
        other, other_token = register(http, "so")
        # A server admin, so that the admin operations are fuzzed past their 403.
        listed = http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        promote = ["users", "promote", listed.json()["username"]]
        assert parley(["admin", "--data-dir", str(tmp_path / "data"), *promote]) == 0
        auth = {"Authorization": f"Bearer {token}"}
        room = http.post("/api/v1/rooms", json={"name": "fuzzed"}, headers=auth).json()["id"]
        r = http.post(f"/api/v1/rooms/{room}/members", json={"user_id": other}, headers=auth)
        assert r.status_code == 201, r.text
        send = f"/api/v1/rooms/{room}/messages"
        message = http.post(send, json={"body": "kept"}, headers=auth).json()["id"]
        doomed = http.post(send, json={"body": "deleted"}, headers=auth).json()["id"]
        # A public room of someone else's, for joining and leaving.
        revolving = http.post(
            "/api/v1/rooms",
            json={"name": "revolving"},
            headers={"Authorization": f"Bearer {other_token}"},
        ).json()["id"]
        http.close()
        message_path = "/rooms/{room_id}/messages/{message_id}"
        toml_text = config(
            auth,
            {"path.room_id": room, "path.message_id": message, "path.user_id": other},
            [
                {"include-path-regex": "/(join|leave)$", "parameters": {"path.room_id": revolving}},
                *(
                    {
                        "include-name": f"DELETE {prefix}{message_path}",
                        "parameters": {"path.message_id": doomed},
                    }
                    for prefix in ("/api/v1", "/api/v1/admin")
                ),
                # The stream's first event is ``ready``; the next may be a heartbeat away.
                {"include-path": "/api/v1/events/stream", "max-stream-events": 1},
                # A search query's grammar (quotes, exclusions, something to search
                # for) and an opaque cursor are beyond JSON Schema: a schema-valid
                # string can be a malformed query, which the API answers 400.
                {
                    "include-path": "/api/v1/search",
                    "checks": {"positive_data_acceptance": {"expected-statuses": SEARCH_OK}},
                },
            ],
        )
        # ST302 takes a 404 after a POST of the parent for the parent missing, also
        # when it is a user named in the body ("user not found" adding a member to a
        # room just made), and per-operation settings do not reach the stateful phase.
        report = without_positive_st201(
            run_schemathesis(
                server.url, tmp_path, toml_text, "--exclude-checks", "ensure_resource_availability"
            )
        )
        asyncio.run(probe(server.url, token, room))
    cases = report["test_cases"]
    print(
        f"\nschemathesis: {cases['generated']} cases over {report['operations']['tested']} "
        f"operations in {report['running_time']:.1f} s; phases "
        + ", ".join(f"{k} {v['status']}" for k, v in report["phases"].items())
    )
    assert report["operations"]["tested"] == report["operations"]["total"]
    assert_clean(report)
    # The document has no examples, so that phase has nothing to run.
    ran = {name: phase["status"] for name, phase in report["phases"].items() if name != "examples"}
    assert ran == {"coverage": "success", "fuzzing": "success", "stateful": "success"}, ran
    assert problems == [], [r.getMessage() for r in problems]


@pytest.mark.timeout(300)
def test_schemathesis_rate_limited_answers_conform(tmp_path: Path) -> None:
    """Limits on and tiny: most answers are 429, each documented, with its
    ``Retry-After`` (required, an integer of seconds)."""
    limits = {
        "rate_limits": "on",
        "rate_limit_read": "2/3600",
        "rate_limit_rooms": "1/3600",
        "rate_limit_revoke": "1/3600",
    }
    with ServerThread(tmp_path / "data", **limits) as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        _, token = register(http, "rl")
        http.close()
        toml_text = config({"Authorization": f"Bearer {token}"}, {}, [])
        report = run_schemathesis(
            server.url,
            tmp_path,
            toml_text,
            "--phases",
            "coverage,fuzzing",
            "--include-path-regex",
            "^/api/v1/(rooms|rooms/public|users/me|auth/revoke)$",
            "--max-examples",
            "15",
        )
    cases = report["test_cases"]
    print(f"\nschemathesis, rate limits on: {cases['generated']} cases")
    assert report["failures"] == [], report["failures"]
    assert report["errors"] == [], report["errors"]
    assert report["exit_code"] == 0, report
    limited = report["warnings"]["rate_limited"]
    assert len(limited) >= 3, f"too few operations answered 429 to check them: {limited}"
