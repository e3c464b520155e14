"""Tests in this folder run on uvloop, which the CLI uses whenever it is installed.

A ``pytest_asyncio_loop_factories`` hook here applies to this folder's tests
only; every other test keeps pytest-asyncio's default loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (the 'fast' extra)")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], object]]:
    return {"uvloop": uvloop.new_event_loop}
