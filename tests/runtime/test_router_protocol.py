"""The router's header decoder: its msgspec lane for MSG and MSGS agrees with the general one."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.router_protocol import (
    RouterProtocolError,
    decode_header,
    decode_header_general,
)

NAMES = st.text(min_size=0, max_size=8) | st.text(min_size=1020, max_size=1030)
ITEMS = st.none() | st.booleans() | st.integers(-5, 2**64 - 1) | NAMES | st.binary(max_size=4)


@st.composite
def msg_headers(draw: st.DrawFn) -> tuple[bytes, int]:
    op = draw(st.sampled_from([proto.MSG, proto.MSGS]))
    items = [
        op,
        draw(NAMES | ITEMS),
        draw(st.none() | NAMES | ITEMS),
        draw(st.lists(NAMES, max_size=3) | ITEMS),
        draw(st.integers(-2, 40) | ITEMS),
    ]
    items += draw(st.lists(ITEMS, max_size=1))  # a later version's extra item
    header = msgpack.packb(items)
    if draw(st.booleans()):
        header += draw(st.binary(min_size=1, max_size=2))  # trailing bytes
    return header, draw(st.integers(0, 3))


def outcome(decoder: Any, frames: list[bytes]) -> Any:
    try:
        return list(decoder(frames))
    except RouterProtocolError as exc:
        return ("error", exc.reason)


@settings(max_examples=1500)
@given(msg_headers())
def test_msg_headers_decode_as_the_general_path_does(case: tuple[bytes, int]) -> None:
    header, n_frames = case
    frames = [header, *[b"e"] * n_frames]
    assert outcome(decode_header, frames) == outcome(decode_header_general, frames)


@pytest.mark.parametrize(
    "frames",
    [
        [proto.msg_header("a.b", None, [], 0), b"e"],
        [proto.msg_header("a.b", "_INBOX.n.1", ["workers"], 2), b"e"],
        [proto.msgs_header("a.b", [], 0), b"e1", b"e2"],
    ],
)
def test_the_usual_headers_round_trip(frames: list[bytes]) -> None:
    assert list(decode_header(frames)) == msgpack.unpackb(frames[0])
    assert frames[0] == msgpack.packb(msgpack.unpackb(frames[0]))  # the same bytes as msgpack
