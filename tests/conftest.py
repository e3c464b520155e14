"""Fixtures shared by every test folder."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from typing import Any

import pytest

REQUIRE_BROKERS = os.environ.get("SYNAPTIC_MESH_REQUIRE_BROKERS") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose broker is unreachable, or fail when CI requires brokers."""
    if REQUIRE_BROKERS:
        pytest.fail(f"{reason} (SYNAPTIC_MESH_REQUIRE_BROKERS=1)")
    pytest.skip(reason)


@pytest.fixture
def no_leaks():
    """Check, after the test body, that no task or thread it started is left.

    Yields a callable ``check()`` the async test awaits after closing its nodes.
    """
    threads_before = set(threading.enumerate())

    async def check() -> None:
        for _ in range(20):
            await asyncio.sleep(0)
        current = asyncio.current_task()
        leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert leftover == [], f"tasks left behind: {leftover}"
        extra = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        assert extra == [], f"threads left behind: {extra}"
        from synaptic_mesh.transports.inproc import open_hubs

        assert open_hubs() == [], f"inproc hubs left open: {open_hubs()}"

    return check


@pytest.fixture
def made_dirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every temporary directory made while the test runs, by this process only.

    Other processes on the machine run the same benches at the same time, so a
    before/after listing of ``/tmp`` would count their directories too.
    """
    made: list[str] = []
    real = tempfile.mkdtemp

    def recording(*args: Any, **kwargs: Any) -> str:
        path = real(*args, **kwargs)
        made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    return made
