"""The layout is the architecture: these import rules keep it so (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "parley"

IO_LIBRARIES = {
    "asyncio", "socket", "ssl", "selectors", "sqlite3", "sqlalchemy", "aiosqlite", "asyncpg",
    "alembic", "redis", "aio_pika", "aiormq", "nats", "httpx", "websockets", "uvicorn",
    "starlette", "fastapi", "aiohttp", "subprocess", "threading",
}  # fmt: skip
DRIVERS = {"sqlalchemy", "aiosqlite", "asyncpg", "alembic", "redis", "aio_pika", "nats"}


def imports_of(path: Path) -> set[str]:
    """Top-level module names and ``parley.x`` subpackages a file imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods = [node.module]
        else:
            continue
        for mod in mods:
            parts = mod.split(".")
            names.add(".".join(parts[:2]) if parts[0] == "parley" else parts[0])
    return names


def files(subpackage: str) -> list[Path]:
    root = PACKAGE / subpackage
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


@pytest.mark.parametrize("path", files("protocol"), ids=str)
def test_protocol_is_sans_io_and_standalone(path: Path) -> None:
    found = imports_of(path)
    assert not found & IO_LIBRARIES, f"{path.name} imports I/O: {found & IO_LIBRARIES}"
    parley_imports = {m for m in found if m.startswith("parley.") and m != "parley.protocol"}
    assert not parley_imports, f"{path.name} imports {parley_imports}"


@pytest.mark.parametrize("path", files("domain"), ids=str)
def test_domain_imports_no_io(path: Path) -> None:
    found = imports_of(path)
    assert not found & IO_LIBRARIES, f"{path.name} imports I/O: {found & IO_LIBRARIES}"
    allowed = {"parley.domain", "parley.errors", "parley.protocol"}
    assert {m for m in found if m.startswith("parley.")} <= allowed


@pytest.mark.parametrize("path", files("service") + files("ports"), ids=str)
def test_services_and_ports_use_no_driver(path: Path) -> None:
    assert not imports_of(path) & DRIVERS
    assert not {m for m in imports_of(path) if m in {"parley.gateway", "parley.store"}}


@pytest.mark.parametrize("path", files("client"), ids=str)
def test_client_depends_on_protocol_only(path: Path) -> None:
    parley_imports = {m for m in imports_of(path) if m.startswith("parley.")}
    assert parley_imports <= {"parley.client", "parley.protocol"}, parley_imports


@pytest.mark.parametrize(
    "path", [p for sub in ("store", "bus", "cache") for p in files(sub)], ids=str
)
def test_backends_depend_on_ports_and_domain(path: Path) -> None:
    parley_imports = {m for m in imports_of(path) if m.startswith("parley.")}
    allowed = {
        "parley.ports", "parley.domain", "parley.errors", "parley.protocol",
        "parley.store", "parley.bus", "parley.cache",
    }  # fmt: skip
    assert parley_imports <= allowed, parley_imports


@pytest.mark.parametrize("path", files("delivery"), ids=str)
def test_delivery_knows_no_transport_and_no_driver(path: Path) -> None:
    found = imports_of(path)
    assert not found & DRIVERS, found & DRIVERS
    parley_imports = {m for m in found if m.startswith("parley.")}
    allowed = {
        "parley.ports",
        "parley.domain",
        "parley.errors",
        "parley.protocol",
        "parley.delivery",
    }
    assert parley_imports <= allowed, parley_imports
