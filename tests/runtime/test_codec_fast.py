"""The codec's fast lane agrees with its general path on everything it takes.

``encode_usual`` and ``decode_usual`` may decline any message (``None``),
but what they return must be exactly what the general path makes: the same
frame 0 bytes, the same envelope. Generated messages check the lane on what
nodes send; corrupted frames check that it declines whatever the general
path refuses, so every error still comes from the general path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synaptic_mesh.runtime import attachments as _att
from synaptic_mesh.runtime import codec_fast
from synaptic_mesh.runtime.codec import (
    DEFAULT_LIMITS,
    CodecLimits,
    decode,
    decode_general,
    encode,
    encode_general,
)
from synaptic_mesh.runtime.codec_fast import decode_usual, encode_new, encode_usual, is_flat
from synaptic_mesh.runtime.envelope import KINDS, WIRE_VERSION, Envelope
from synaptic_mesh.runtime.errors import DecodeError
from synaptic_mesh.runtime.messages import message


@pytest.fixture(autouse=True, scope="module")
def default_threshold() -> Iterator[None]:
    """Buffers inline below the default threshold, whatever limits other tests created."""
    saved = _att.min_threshold
    _att.min_threshold = DEFAULT_LIMITS.attachment_threshold
    yield
    _att.min_threshold = saved


@message(name="test_codec_fast.Flat")
class Flat:
    s: str
    i: int
    f: float
    b: bool
    raw: bytes
    maybe: str | None


@message(name="test_codec_fast.Lists")
class Lists:
    names: list[str]
    scores: dict[str, float]
    flags: list[bool] | None
    counts: dict[str, int] | None


@message(name="test_codec_fast.Empty")
class Empty:
    pass


@message(name="test_codec_fast.Defaulted")
class Defaulted:
    text: str
    n: int = 7


@message(name="test_codec_fast.Checked")
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("n must not be negative")


@message(name="test_codec_fast.Nested")
class Nested:
    items: list[list[int]]


@message(name="test_codec_fast.Hidden")
class Hidden:
    shown: int
    counted: int = dataclasses.field(init=False, default=0)


@message(name="test_codec_fast.KeywordOnly")
@dataclasses.dataclass(kw_only=True)
class KeywordOnly:
    n: int


@message(name="test_codec_fast.Private")
class Private:
    _n: int


@message(name="test_codec_fast.OwnInit")
class OwnInit:
    n: int

    def __init__(self, n: int, extra: int = 0) -> None:
        self.n = n + extra


INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
TEXT = st.text(max_size=40)
OPT_TEXT = st.none() | TEXT
FLOATS = st.floats(allow_nan=False)

FLATS = st.builds(
    Flat,
    s=TEXT,
    i=INTS,
    f=FLOATS,
    b=st.booleans(),
    raw=st.binary(max_size=300),
    maybe=OPT_TEXT,
)
HEADER_VALUES = st.recursive(
    st.none() | st.booleans() | INTS | FLOATS | TEXT | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
HEADERS = st.none() | st.dictionaries(TEXT, HEADER_VALUES, max_size=3)
PLAIN = st.none() | st.booleans() | INTS | FLOATS | TEXT | st.binary(max_size=300)
LISTS = st.builds(
    Lists,
    names=st.lists(TEXT, max_size=4),
    scores=st.dictionaries(TEXT, FLOATS, max_size=3),
    flags=st.none() | st.lists(st.booleans(), max_size=3),
    counts=st.none() | st.dictionaries(TEXT, INTS, max_size=3),
)
BODIES = (
    FLATS
    | LISTS
    | PLAIN
    | st.just(Empty())
    | st.builds(Defaulted, TEXT, INTS)
    | st.builds(Checked, st.integers(0, 2**64 - 1))
)


@st.composite
def usual_envelopes(draw: st.DrawFn) -> Envelope:
    kind = draw(st.sampled_from(sorted(KINDS)))
    return Envelope(
        draw(TEXT),
        kind,
        draw(TEXT.filter(bool)),
        draw(BODIES),
        sender=draw(OPT_TEXT),
        reply_to=draw(OPT_TEXT),
        corr=draw(OPT_TEXT),
        seq=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        deadline=draw(st.none() | FLOATS),
        headers=draw(HEADERS),
    )


def nested(depth: int) -> list[Any]:
    """Lists ``depth`` deep."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _copy(env: Envelope) -> Envelope:
    """A copy of ``env``: each path sets ``type`` on the one it encodes."""
    return Envelope(
        env.id,
        env.kind,
        env.subject,
        env.body,
        type=env.type,
        sender=env.sender,
        reply_to=env.reply_to,
        corr=env.corr,
        seq=env.seq,
        deadline=env.deadline,
        headers=env.headers,
        attachments=env.attachments,
    )


def assert_same(fast: Envelope, general: Envelope) -> None:
    """Equal, NaN included (a corrupted float can be one): the same fields, which
    encode to the same bytes."""
    assert fast.__struct_fields__ == general.__struct_fields__
    for name in fast.__struct_fields__:
        assert type(getattr(fast, name)) is type(getattr(general, name)), name
    assert encode_general(_copy(fast)) == encode_general(_copy(general))


def general_or_error(frames: list[Any]) -> Envelope | DecodeError:
    try:
        return decode_general(frames)
    except DecodeError as exc:
        return exc


# ------------------------------------------------------------------------- encode


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(usual_envelopes())
def test_the_fast_lane_encodes_the_same_bytes(env: Envelope) -> None:
    fast_env, general_env = _copy(env), _copy(env)
    fast = encode_usual(fast_env, DEFAULT_LIMITS)
    frames = encode_general(general_env)
    if fast is not None:
        assert [fast] == frames
        assert fast_env == general_env  # the same ``type`` set on both


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(usual_envelopes())
def test_the_fast_lane_decodes_the_same_envelope(env: Envelope) -> None:
    (frame0,) = encode_general(env)
    fast = decode_usual(frame0, DEFAULT_LIMITS)
    general = decode_general([frame0])
    if fast is not None:
        assert_same(fast, general)
        assert type(fast.body) is type(general.body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(usual_envelopes())
def test_a_new_envelope_encodes_as_the_general_path_encodes_it(env: Envelope) -> None:
    env.headers = None  # a node's own sends have none
    fast = encode_new(
        env.id,
        env.kind,
        env.subject,
        env.body,
        env.sender,
        env.reply_to,
        env.corr,
        env.seq,
        env.deadline,
        DEFAULT_LIMITS,
    )
    if fast is not None:
        assert [fast] == encode_general(_copy(env))


@pytest.mark.parametrize(
    ("subject", "sender", "body"),
    [(7, None, 1), ("", None, 1), ("a", 5, 1), ("a", None, [1]), ("a", None, object())],
)
def test_a_new_envelope_with_a_wrong_part_takes_the_general_path(
    subject: Any, sender: Any, body: Any
) -> None:
    assert (
        encode_new("n.1", "tell", subject, body, sender, None, None, 1, None, DEFAULT_LIMITS)
        is None
    )


def test_the_usual_message_takes_the_fast_lane() -> None:
    env = Envelope("n.1", "tell", "a.b", Flat("s", 1, 2.5, True, b"x" * 64, None), seq=1)
    frame0 = encode_usual(env, DEFAULT_LIMITS)
    assert frame0 is not None
    assert env.type == "test_codec_fast.Flat"
    decoded = decode_usual(frame0, DEFAULT_LIMITS)
    assert decoded == env
    for body in (None, True, -5, 2**64 - 1, 1.5, "text", b"\x00\xff"):
        plain = Envelope("n.2", "ask", "a.b", body, reply_to="_INBOX.x", corr="c", seq=1)
        frame0 = encode_usual(plain, DEFAULT_LIMITS)
        assert frame0 is not None, body
        assert decode_usual(frame0, DEFAULT_LIMITS) == plain


@pytest.mark.parametrize(
    ("cls", "flat"),
    [
        (Flat, True),
        (Lists, True),
        (Empty, True),
        (Defaulted, True),
        (Checked, True),
        (Nested, False),
        (Hidden, False),
        (KeywordOnly, False),
        (Private, False),
        (OwnInit, False),
    ],
)
def test_which_classes_are_flat(cls: type, flat: bool) -> None:
    assert is_flat(cls) is flat


@pytest.mark.parametrize(
    "env",
    [
        # what the general path converts, or refuses, the lane leaves to it
        Envelope("n", "tell", "a", Flat("s", 1, 2, True, b"", None)),  # int in a float field
        Envelope("n", "tell", "a", Flat("s", True, 2.0, True, b"", None)),  # bool in an int field
        Envelope("n", "tell", "a", Flat("s", 1, 2.0, True, bytearray(b"x"), None)),
        Envelope("n", "tell", "a", Flat("s", 1, 2.0, True, b"x" * (1 << 20), None)),
        Envelope("n", "tell", "a", Lists(["a", 1], {}, None, None)),  # type: ignore[list-item]
        Envelope("n", "tell", "a", Lists(("a",), {}, None, None)),  # type: ignore[arg-type]
        Envelope("n", "tell", "a", Lists([], {"x": 1}, None, None)),  # int in a float map
        Envelope("n", "tell", "a", Lists([], {}, [1], None)),  # type: ignore[list-item]
        Envelope("n", "tell", "a", Lists([], {}, None, {1: 1})),  # type: ignore[dict-item]
        Envelope("n", "tell", "a", 2**64),  # out of msgpack's range
        Envelope("n", "tell", "a", [1, 2]),
        Envelope("n", "tell", "a", {"k": 1}),
        Envelope("n", "tell", "a", 1, headers={"trace": ("t", 1)}),  # a tuple
        Envelope("n", "tell", "a", 1, headers={1: "t"}),  # type: ignore[dict-item]
        Envelope(
            "n",
            "tell",
            "a",
            1,
            headers={"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        ),
        Envelope("n", "tell", "a", 1, attachments=(b"frame",)),
        Envelope("n", "tell", "a", 1, type="test_codec_fast.Flat"),  # a type but a plain body
        Envelope("n", "tell", "a", Empty(), type="test_codec_fast.Flat"),  # the wrong type
        Envelope("n", "shout", "a", 1),
        Envelope("n", "tell", "", 1),
        Envelope("n", "tell", "a", 1, seq=-1),
        Envelope("n", "tell", "a", 1, deadline=5),  # an int deadline
        Envelope(7, "tell", "a", 1),  # type: ignore[arg-type]
    ],
    ids=lambda env: repr(env.body)[:30],
)
def test_the_fast_lane_declines_what_the_general_path_converts_or_refuses(env: Envelope) -> None:
    assert encode_usual(_copy(env), DEFAULT_LIMITS) is None


def test_a_frame_over_the_limits_takes_the_general_path() -> None:
    limits = CodecLimits(max_frame=60)
    env = Envelope("n.1", "tell", "a.b", "x" * 100, seq=1)
    assert encode_usual(_copy(env), limits) is None
    with pytest.raises(ValueError, match="over the limit of 60"):
        encode(env, limits)
    (frame0,) = encode(env)
    with pytest.raises(DecodeError, match="over the limit of 60"):
        decode([frame0], limits)


# ------------------------------------------------------------------------- decode


def frame(items: list[Any]) -> bytes:
    return msgpack.packb(items, use_bin_type=True)


def items(body: Any, type_: str = "", **changes: Any) -> list[Any]:
    base: dict[str, Any] = {
        "version": WIRE_VERSION,
        "id": "n.1",
        "kind": "tell",
        "sender": None,
        "subject": "a.b",
        "reply_to": None,
        "corr": None,
        "seq": 1,
        "deadline": None,
        "headers": None,
        "type": type_,
        "body": body,
        "attachments": 0,
    }
    base.update(changes)
    return list(base.values())


FLAT_MAP = {"s": "s", "i": 1, "f": 2.5, "b": True, "raw": b"r", "maybe": None}
LISTS_MAP = {"names": ["a"], "scores": {"x": 1.5}, "flags": None, "counts": {"n": 2}}


@pytest.mark.parametrize(
    "frame0",
    [
        frame(items({**FLAT_MAP, "i": True}, "test_codec_fast.Flat")),  # bool for int
        frame(items({**FLAT_MAP, "i": 1.0}, "test_codec_fast.Flat")),  # float for int
        frame(items({**FLAT_MAP, "raw": "r"}, "test_codec_fast.Flat")),  # str for bytes
        frame(items({**FLAT_MAP, "f": False}, "test_codec_fast.Flat")),  # bool for float
        frame(items({**FLAT_MAP, "extra": 1}, "test_codec_fast.Flat")),  # an unknown field
        frame(items({**FLAT_MAP, "extra": [[[[]]]]}, "test_codec_fast.Flat")),
        frame(items({k: v for k, v in FLAT_MAP.items() if k != "s"}, "test_codec_fast.Flat")),
        frame(items({"text": "t"}, "test_codec_fast.Defaulted")),  # a default filled in
        frame(items({"n": -1}, "test_codec_fast.Checked")),  # __post_init__ refuses it
        frame(items({"n": 1}, "test_codec_fast.Nowhere")),  # an unknown type
        frame(items({**LISTS_MAP, "names": ["a", 1]}, "test_codec_fast.Lists")),
        frame(items({**LISTS_MAP, "names": ["a", b"b"]}, "test_codec_fast.Lists")),
        frame(items({**LISTS_MAP, "flags": [1]}, "test_codec_fast.Lists")),
        frame(items({**LISTS_MAP, "counts": {1: 1}}, "test_codec_fast.Lists")),
        frame(items({**LISTS_MAP, "counts": {"a": True}}, "test_codec_fast.Lists")),
        frame(items({"items": [[1]]}, "test_codec_fast.Nested")),  # not flat
        frame(items([1, [2]])),  # a plain container
        frame(items({1: 2})),  # a non-str key
        frame(items(1, headers={"h": msgpack.ExtType(3, b"x")})),
        frame(items(1, headers={"h": {1: 2}})),
        frame(
            items(
                1,
                headers={
                    "h": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
                },
            )
        ),
        frame(items(1, headers=[1])),
        frame(items(1, version=2)),
        frame(items(1, kind="shout")),
        frame(items(1, subject="")),
        frame(items(1, seq=-1)),
        frame(items(1, attachments=1)),
        frame(items(1, id=5)),
        frame([*items(1), "a later field"]),
        frame(items(1))[:-1],  # truncated
        frame(items(1)) + b"\x00",  # trailing bytes
        frame(items(b"\xc1")).replace(b"\xc4\x01\xc1", b"\xc1\xc1\xc1"),  # reserved byte
        frame(items("caf\u00e9")).replace("\u00e9".encode(), b"\xff\xfe"),  # bad UTF-8
        frame(items(msgpack.ExtType(5, b"x"))),
        frame(items(msgpack.Timestamp(1, 0))),
        b"\xc0",
        b"",
    ],
)
def test_the_fast_lane_declines_what_the_general_path_handles(frame0: bytes) -> None:
    assert decode_usual(frame0, DEFAULT_LIMITS) is None
    result = general_or_error([frame0])
    try:
        assert decode([frame0]) == result
    except DecodeError as exc:
        assert isinstance(result, DecodeError)
        assert exc.reason == result.reason


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    (frame0,) = encode_general(draw(usual_envelopes()))
    data = bytearray(frame0)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            del data[at]
    return bytes(data)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_on_corrupted_frames_the_fast_lane_agrees_or_declines(frame0: bytes) -> None:
    fast = decode_usual(frame0, DEFAULT_LIMITS)
    general = general_or_error([frame0])
    if fast is not None:
        assert not isinstance(general, DecodeError), general.reason
        assert_same(fast, general)


def test_views_and_byte_arrays_decode_alike() -> None:
    env = Envelope("n.1", "tell", "a.b", Flat("s", 1, 2.5, False, b"raw", "m"), seq=3)
    (frame0,) = encode(env)
    for buffer in (frame0, bytearray(frame0), memoryview(frame0)):
        assert decode_usual(buffer, DEFAULT_LIMITS) == decode_general([frame0])
    assert decode_usual(memoryview(frame0)[::2], DEFAULT_LIMITS) is None  # not contiguous


def test_plain_headers_take_the_fast_lane() -> None:
    headers = {"pipe": ["ingest", 3, 0, None, 1], "trace": {"id": b"\x01", "on": True}}
    env = Envelope("n.1", "tell", "a.b", 5, seq=1, headers=headers)
    frame0 = encode_usual(_copy(env), DEFAULT_LIMITS)
    assert frame0 is not None
    assert [frame0] == encode_general(_copy(env))
    assert decode_usual(frame0, DEFAULT_LIMITS) == env


def test_containers_take_the_fast_lane_when_the_depth_limit_allows() -> None:
    body = Lists(["a", "b"], {"x": 1.5}, [True], {"n": 2})
    env = Envelope("n.1", "tell", "a.b", body, seq=1)
    frame0 = encode_usual(_copy(env), DEFAULT_LIMITS)
    assert frame0 is not None
    assert decode_usual(frame0, DEFAULT_LIMITS) == decode_general([frame0])
    flat_only = CodecLimits(max_depth=1)  # the message's own map, and nothing in it
    assert encode_usual(_copy(env), flat_only) is None
    assert decode_usual(frame0, flat_only) is None
    with pytest.raises(DecodeError, match="deeper"):
        decode([frame0], flat_only)
    int_floats = frame(items({**LISTS_MAP, "scores": {"x": 1}}, "test_codec_fast.Lists"))
    fast = decode_usual(int_floats, DEFAULT_LIMITS)
    assert fast is not None
    assert fast.body.scores == {"x": 1.0}
    assert type(fast.body.scores["x"]) is float
    assert_same(fast, decode_general([int_floats]))


def test_an_int_deadline_becomes_a_float_on_both_paths() -> None:
    frame0 = frame(items(1, deadline=3))
    fast = decode_usual(frame0, DEFAULT_LIMITS)
    assert fast is not None
    assert fast == decode_general([frame0])
    assert type(fast.deadline) is float


def test_a_class_refusing_its_fields_is_reported_by_the_general_path() -> None:
    frame0 = frame(items({"n": -1}, "test_codec_fast.Checked"))
    with pytest.raises(DecodeError, match="n must not be negative"):
        decode([frame0])


def test_flat_views_are_cached_per_class() -> None:
    assert codec_fast._flat(Flat) is codec_fast._flat(Flat)
    assert codec_fast._flat(Nested) is None


def test_the_codec_sends_the_usual_message_through_the_fast_lane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``encode`` and ``decode`` (as links hand frames over: a list or a tuple) never reach
    the general path for the usual message."""
    from synaptic_mesh.runtime import codec

    env = Envelope("n.1", "tell", "a.b", Flat("s", 1, 2.5, True, b"x", None), seq=1)
    (frame0,) = encode_general(_copy(env))
    env.type = "test_codec_fast.Flat"  # as encoding sets it

    def general(*args: Any) -> Any:
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(codec, "encode_general", general)
    monkeypatch.setattr(codec, "decode_general", general)
    assert encode(_copy(env)) == [frame0]
    assert decode([frame0]) == env
    assert decode((frame0,)) == env


def test_a_node_encodes_its_usual_sends_from_their_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Node.new_frames`` makes no envelope and calls no codec for the usual message; its
    frame decodes to what ``make_envelope`` would have made."""
    from synaptic_mesh.runtime import codec
    from synaptic_mesh.runtime.node import Node

    node = Node("tcp://127.0.0.1:0", name="fast")
    body = Flat("s", 1, 2.5, True, b"x", None)

    def general(*args: Any) -> Any:
        raise AssertionError("the codec's general entry was taken")

    monkeypatch.setattr(codec, "encode", general)
    (frame0,) = node.new_frames("ask", "a.b", body, "me", "_INBOX.fast.7", "7", 12.5)
    env = decode([frame0])
    assert (env.kind, env.subject, env.body, env.sender) == ("ask", "a.b", body, "me")
    assert (env.reply_to, env.corr, env.deadline, env.seq) == ("_INBOX.fast.7", "7", 12.5, 1)
    assert env.id.startswith(f"{node.id}.")
    monkeypatch.undo()
    (again,) = node.new_frames("ask", "a.b", Nested([[1]]), "me")  # not flat: the codec
    assert decode([again]).seq == 2


def test_should_the_fast_lane_raise_the_general_path_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from synaptic_mesh.runtime import codec

    env = Envelope("n.1", "tell", "a.b", 5, seq=1)
    (frame0,) = encode_general(_copy(env))

    def broken(*args: Any) -> Any:
        raise RuntimeError("a fault in the fast lane")

    monkeypatch.setattr(codec, "decode_usual", broken)
    assert decode([frame0]) == env
    with pytest.raises(DecodeError, match="truncated"):
        decode([frame0[:-1]])
