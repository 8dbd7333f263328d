"""Access-token checks, and the cache of tokens already verified."""

from __future__ import annotations

import time

import jwt
import pytest

from parley.auth import tokens as tokens_module
from parley.auth.tokens import ALGORITHM, AUDIENCE, Tokens
from parley.errors import Unauthorized

KEY = b"k" * 32


def make(ttl: int = 900) -> Tokens:
    return Tokens(None, KEY, issuer="https://chat.example", access_ttl=ttl)  # type: ignore[arg-type]


def test_a_valid_token_names_its_user_and_stays_valid_when_cached() -> None:
    tokens = make()
    token = tokens.access_token("alice")  # type: ignore[arg-type]
    assert tokens.verify_access(token) == "alice"
    assert tokens.verify_access(token) == "alice"


def test_a_cached_token_still_expires() -> None:
    tokens = make(ttl=1)
    token = tokens.access_token("alice")  # type: ignore[arg-type]
    assert tokens.verify_access(token) == "alice"
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    with pytest.raises(Unauthorized) as caught:
        tokens.verify_access(token)
    assert caught.value.code == "token_expired"


@pytest.mark.parametrize(
    "forge",
    [
        lambda claims: jwt.encode(claims, b"x" * 32, algorithm=ALGORITHM),  # another key
        lambda claims: jwt.encode(claims | {"aud": "other"}, KEY, algorithm=ALGORITHM),
        lambda claims: jwt.encode(claims | {"iss": "https://evil"}, KEY, algorithm=ALGORITHM),
        lambda claims: jwt.encode(claims, None, algorithm="none"),
        lambda claims: jwt.encode(claims, KEY, algorithm=ALGORITHM) + "x",
    ],
    ids=["key", "audience", "issuer", "algorithm", "tampered"],
)
def test_a_bad_token_is_refused_every_time(forge: object) -> None:
    tokens = make()
    now = int(time.time())
    claims = {"sub": "alice", "iat": now, "exp": now + 60, "iss": "https://chat.example"}
    token = forge(claims | {"aud": AUDIENCE})  # type: ignore[operator]
    for _ in range(2):
        with pytest.raises(Unauthorized):
            tokens.verify_access(token)


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "VERIFIED_CACHE", 3)
    tokens = make()
    issued = [tokens.access_token(f"u{i}") for i in range(5)]  # type: ignore[arg-type]
    for i, token in enumerate(issued):
        assert tokens.verify_access(token) == f"u{i}"
    assert list(tokens._verified) == issued[2:]
