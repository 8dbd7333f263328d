"""Connection caps, trusted proxies, throttled logging and rate settings, without
a server."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from parley.gateway.limits import ConnectionLimits, ThrottledLog, TrustedProxies
from parley.settings import Settings, parse_rate


def limits(**kw: int) -> ConnectionLimits:
    values = {"max_connections": 5, "max_per_ip": 2, "max_unauthenticated_ws_per_ip": 1} | kw
    return ConnectionLimits(
        max_connections=values["max_connections"],
        max_per_ip=values["max_per_ip"],
        max_unauthenticated_ws_per_ip=values["max_unauthenticated_ws_per_ip"],
        trusted=TrustedProxies(["10.0.0.0/8"]),
    )


def test_per_address_and_total_caps_count_opens_and_closes() -> None:
    caps = limits()
    assert caps.open("1.1.1.1") is None
    assert caps.open("1.1.1.1") is None
    assert caps.open("1.1.1.1") is not None  # third from one address
    assert caps.open("2.2.2.2") is None
    caps.close("1.1.1.1")
    assert caps.open("1.1.1.1") is None
    assert caps.open("10.1.2.3") is None  # a trusted proxy: total only
    assert caps.open("10.1.2.3") is None
    assert caps.open("10.1.2.3") is not None  # the total (5) reached
    assert caps.total == 5
    for ip in ("1.1.1.1", "1.1.1.1", "2.2.2.2", "10.1.2.3", "10.1.2.3"):
        caps.close(ip)
    assert caps.total == 0 and caps.per_ip == {}


def test_unauthenticated_sockets_per_address() -> None:
    caps = limits()
    assert caps.enter_unauthenticated("1.1.1.1")
    assert not caps.enter_unauthenticated("1.1.1.1")
    assert caps.enter_unauthenticated("2.2.2.2")
    caps.leave_unauthenticated("1.1.1.1")
    assert caps.enter_unauthenticated("1.1.1.1")


def test_refusals_are_logged_once_per_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="parley.limits")
    caps = limits(max_per_ip=1)
    caps.open("1.1.1.1")
    for _ in range(50):
        caps.open("1.1.1.1")
    caps.open("2.2.2.2")
    caps.open("2.2.2.2")
    assert caps.refusals == 51
    assert len(caplog.records) == 2


def test_throttled_log_forgets_after_its_period() -> None:
    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    logger = logging.getLogger("test.throttled")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    throttled = ThrottledLog(logger, every=0.0)
    assert throttled(logging.INFO, "k", "one")
    assert throttled(logging.INFO, "k", "two")
    once = ThrottledLog(logger, every=60.0)
    assert once(logging.INFO, "k", "three")
    assert not once(logging.INFO, "k", "four")
    assert logged == ["one", "two", "three"]


def test_trusted_proxies_match_addresses_and_networks() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])
    assert proxies.contains("127.0.0.1") and proxies.contains("10.9.8.7")
    assert proxies.contains("fd00::1")
    assert not proxies.contains("127.0.0.2") and not proxies.contains("not an ip")
    assert not TrustedProxies([])


@pytest.mark.parametrize(("value", "rate", "burst"), [("60/10", 6.0, 60.0), ("5/0.5s", 10.0, 5.0)])
def test_rates_parse(value: str, rate: float, burst: float) -> None:
    assert parse_rate(value) == (rate, burst)


@pytest.mark.parametrize("value", ["60", "0/10", "10/0", "a/b", "-1/5", "10/-1", ""])
def test_bad_rates_and_networks_are_refused_at_start(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(rate_limit_send=value)


def test_bad_proxy_networks_are_refused_at_start() -> None:
    with pytest.raises(ValidationError):
        Settings(trusted_proxies="10.0.0.0/8, chat.example.com")
    assert Settings(trusted_proxies="10.0.0.0/8, ::1").proxies == ["10.0.0.0/8", "::1"]
