from __future__ import annotations

import pytest

from tests.conformance.transports import CASES, TransportCase


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case(request: pytest.FixtureRequest) -> TransportCase:
    """Every transport of the conformance suite (``tests/conformance/transports.py``)."""
    return request.param
