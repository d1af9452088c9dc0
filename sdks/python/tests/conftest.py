"""The suite runs against a real ``sandpit serve`` named by SANDPIT_URL / SANDPIT_KEY (the Rust
test crates/cli/tests/suite/sdk_python.rs starts one and runs this suite). Without them the
server tests are skipped, except under CI=true, where that is a failure."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from sandpit import Sandbox, Sandpit

SERVER = bool(os.environ.get("SANDPIT_URL") and os.environ.get("SANDPIT_KEY"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SERVER:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("CI=true: SANDPIT_URL and SANDPIT_KEY must name a server")
    skip = pytest.mark.skip(reason="no server: set SANDPIT_URL and SANDPIT_KEY")
    for item in items:
        if "server" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server: needs a sandpit server")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def client() -> Iterator[Sandpit]:
    with Sandpit() as client:
        yield client


@pytest.fixture(scope="session")
def sandbox(client: Sandpit) -> Iterator[Sandbox]:
    """One sandbox shared by the tests that do not change its lifecycle (fast: a sandbox
    start is the slow part)."""
    with client.sandbox(unique("pytest"), ephemeral=True) as sb:
        yield sb


def ipython_display(obj: object) -> dict[str, Any]:
    """The MIME bundle IPython (and so Jupyter) shows for ``obj``."""
    from IPython.core.formatters import DisplayFormatter

    bundle, _ = DisplayFormatter().format(obj)  # type: ignore[no-untyped-call]
    return dict(bundle)
