"""``deploy/docker-compose.yml`` in step with the code: every ``PARLEY_*`` variable it
sets is a setting and validates as one, the nodes agree on what a cluster must share,
and nginx balances exactly the nodes. PyYAML comes with ``uvicorn[standard]``."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from parley.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SHARED = ("PARLEY_DATABASE_URL", "PARLEY_BUS_URL", "PARLEY_CACHE_URL", "PARLEY_SECRET_KEY")
_DEFAULT = re.compile(r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)\}")


def interpolate(value: str) -> str:
    """What compose makes of ``value`` with no variables set, except that a required
    one (``${X:?…}``) gets a valid stand-in: the secret, the only one."""

    def one(m: re.Match[str]) -> str:
        if m.group(2) is not None:
            return m.group(2)
        assert m.group(1) == "PARLEY_SECRET_KEY", f"unexpected required variable {m.group(1)}"
        return "ab" * 32

    return _DEFAULT.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def nodes(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Each Parley node's environment, by service name."""
    return {
        name: {k: str(v) for k, v in svc["environment"].items()}
        for name, svc in compose["services"].items()
        if any(k.startswith("PARLEY_") for k in svc.get("environment", {}))
    }


def test_three_nodes_and_the_services_they_need(compose: dict[str, Any]) -> None:
    assert sorted(nodes(compose)) == ["parley-1", "parley-2", "parley-3"]
    assert {"postgres", "rabbitmq", "redis", "nginx"} <= set(compose["services"])


def test_every_parley_variable_is_a_setting_and_validates(compose: dict[str, Any]) -> None:
    fields = {f"PARLEY_{name.upper()}" for name in Settings.model_fields}
    for name, env in nodes(compose).items():
        parley_vars = {k: v for k, v in env.items() if k.startswith("PARLEY_")}
        unknown = set(parley_vars) - fields
        assert not unknown, f"{name} sets {unknown}, which Settings does not have"
        values = {k.removeprefix("PARLEY_").lower(): interpolate(v) for k, v in parley_vars.items()}
        settings = Settings.model_validate(values)
        assert settings.host == "0.0.0.0"


def test_nodes_share_what_a_cluster_shares(compose: dict[str, Any]) -> None:
    envs = list(nodes(compose).values())
    for key in SHARED:
        assert len({env[key] for env in envs}) == 1, f"the nodes disagree on {key}"
    assert len({env["PARLEY_NODE_ID"] for env in envs}) == len(envs)
    env = envs[0]
    services = set(compose["services"])
    for key in ("PARLEY_DATABASE_URL", "PARLEY_BUS_URL", "PARLEY_CACHE_URL"):
        host = urlsplit(interpolate(env[key])).hostname
        assert host in services, f"{key} names {host}, not a service of the file"
    assert interpolate(env["PARLEY_DATABASE_URL"]).startswith("postgresql://")
    assert not interpolate(env["PARLEY_BUS_URL"]).startswith("memory:")


def test_nginx_balances_exactly_the_nodes(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    conf = (DEPLOY / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server (\S+) ", conf, flags=re.MULTILINE)
    expected = [f"{name}:{env['PARLEY_PORT']}" for name, env in nodes(compose).items()]
    assert sorted(upstreams) == sorted(expected)
    assert set(nginx["depends_on"]) == set(nodes(compose))


def test_nodes_trust_nginx_and_only_it(compose: dict[str, Any]) -> None:
    """The nodes believe X-Forwarded-For from nginx's fixed address, not from anyone."""
    address = compose["services"]["nginx"]["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    for name, env in nodes(compose).items():
        assert env["PARLEY_TRUSTED_PROXIES"] == address, name
