"""The msgpack codec: round trips, strictness on every bad input, bounds."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synaptic_mesh.runtime.codec import DEFAULT_LIMITS, CodecLimits, decode, encode
from synaptic_mesh.runtime.envelope import KINDS, WIRE_VERSION, Envelope
from synaptic_mesh.runtime.errors import DecodeError
from synaptic_mesh.runtime.messages import message, name_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
FLOATS = st.floats(allow_nan=False)


# --------------------------------------------------------------- messages


@message(name="test_codec.Leaf")
class Leaf:
    text: str
    n: int


@message(name="test_codec.Verdict")
class Verdict:
    ok: bool
    reason: str


@message(name="test_codec.Verify")
class Verify:
    claim: str


@message(name="test_codec.Everything")
class Everything:
    s: str
    i: int
    f: float
    b: bool
    raw: bytes
    opt: str | None
    items: list[int]
    seq: tuple[str, ...]
    pair: tuple[int, str]
    mapping: dict[str, float]
    leaf: Leaf
    maybe_leaf: Leaf | None
    leaves: list[Leaf]
    anything: Any
    union: int | str | None
    with_default: str = "d"
    with_factory: list[str] = dataclasses.field(default_factory=list)


@message(name="test_codec.Tree")
class Tree:
    label: str
    children: list[Tree]


@message(name="test_codec.Holder", frozen=True)
class Holder:
    leaf: Leaf
    tags: list[str] = dataclasses.field(default_factory=list)


@message(name="test_codec.Positive")
class Positive:
    value: int

    def __post_init__(self) -> None:
        if self.value <= 0:
            raise ValueError("value must be positive")


@message(name="test_codec.Unsupported")
class Unsupported:
    when: set[int]


class NotAMessage:
    pass


@dataclasses.dataclass
class PlainDataclass:
    x: int


# --------------------------------------------------------------- strategies

PLAIN_SCALARS = st.none() | st.booleans() | INT64 | FLOATS | st.text() | st.binary()
PLAIN = st.recursive(
    PLAIN_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
LEAVES = st.builds(Leaf, text=st.text(), n=INT64)
TREES = st.recursive(
    st.builds(Tree, label=st.text(max_size=5), children=st.just([])),
    lambda sub: st.builds(Tree, label=st.text(max_size=5), children=st.lists(sub, max_size=3)),
    max_leaves=8,
)
EVERYTHING = st.builds(
    Everything,
    s=st.text(),
    i=INT64,
    f=FLOATS,
    b=st.booleans(),
    raw=st.binary(),
    opt=st.none() | st.text(),
    items=st.lists(INT64, max_size=5),
    seq=st.lists(st.text(max_size=5), max_size=4).map(tuple),
    pair=st.tuples(INT64, st.text(max_size=5)),
    mapping=st.dictionaries(st.text(max_size=5), FLOATS, max_size=4),
    leaf=LEAVES,
    maybe_leaf=st.none() | LEAVES,
    leaves=st.lists(LEAVES, max_size=3),
    anything=PLAIN,
    union=st.none() | INT64 | st.text(),
    with_default=st.text(max_size=5),
    with_factory=st.lists(st.text(max_size=5), max_size=3),
)
MESSAGES = (
    EVERYTHING
    | st.from_type(Verdict)
    | st.from_type(Verify)
    | LEAVES
    | TREES
    | st.builds(Holder, leaf=LEAVES, tags=st.lists(st.text(max_size=4), max_size=3))
)
OPT_TEXT = st.none() | st.text(max_size=20)
HEADERS = st.none() | st.dictionaries(st.text(max_size=10), PLAIN, max_size=4)
ATTACHMENTS = st.lists(st.binary(max_size=64), max_size=3).map(tuple)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    typed = draw(st.booleans())
    body = draw(MESSAGES) if typed else draw(PLAIN)
    return Envelope(
        draw(st.text(max_size=20)),
        draw(st.sampled_from(sorted(KINDS))),
        draw(st.text(min_size=1, max_size=30)),
        body,
        type=name_of(type(body)) or "" if typed else "",
        sender=draw(OPT_TEXT),
        reply_to=draw(OPT_TEXT),
        corr=draw(OPT_TEXT),
        seq=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        deadline=draw(st.none() | FLOATS),
        headers=draw(HEADERS),
        attachments=draw(ATTACHMENTS),
    )


def assert_same(decoded: Envelope, original: Envelope) -> None:
    for name in Envelope.__struct_fields__:
        assert getattr(decoded, name) == getattr(original, name), name
    assert decoded == original


# --------------------------------------------------------------- round trips


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
def test_round_trip_envelopes(env: Envelope) -> None:
    frames = encode(env)
    assert len(frames) == 1 + len(env.attachments)
    assert_same(decode(frames), env)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
def test_round_trip_messages(msg: Any) -> None:
    env = Envelope("id", "tell", "a.b", msg)
    decoded = decode(encode(env))
    assert env.type == name_of(type(msg))  # set by encode
    assert type(decoded.body) is type(msg)
    assert decoded.body == msg
    assert_same(decoded, env)


def test_round_trip_with_memoryview_frames_and_no_copy() -> None:
    blob = bytearray(b"\x00" * 1024)
    view = memoryview(blob)
    env = Envelope("id", "tell", "a.b", Verify("x"), attachments=(view, b"second"))
    frames = encode(env)
    assert frames[1] is view
    decoded = decode([memoryview(frames[0]), *frames[1:]])
    assert decoded.attachments[0] is view
    assert decoded.body == Verify("x")


def test_decoded_types_follow_annotations() -> None:
    # Hand-built body: int for a float field becomes a float, arrays become tuples.
    raw = {"f": 3, "seq": ["a"], "pair": [1, "x"]}
    body = {
        **{f: v for f, v in raw.items()},
        "s": "",
        "i": 1,
        "b": True,
        "raw": b"",
        "opt": None,
        "items": [],
        "mapping": {"k": 2},
        "leaf": {"text": "t", "n": 0},
        "maybe_leaf": None,
        "leaves": [],
        "anything": {"k": [1, None]},
        "union": "u",
    }
    env = decode([frame0(type="test_codec.Everything", body=body)])
    msg = env.body
    assert isinstance(msg, Everything)
    assert type(msg.f) is float and msg.f == 3.0
    assert msg.seq == ("a",) and msg.pair == (1, "x")
    assert msg.mapping == {"k": 2.0} and type(msg.mapping["k"]) is float
    assert msg.leaf == Leaf("t", 0)
    assert msg.with_default == "d" and msg.with_factory == []


def test_unknown_fields_and_trailing_items_are_ignored() -> None:
    body = {"ok": True, "reason": "fine", "confidence": 0.9, "extra": {"deep": [1]}}
    items = [*items13(type="test_codec.Verdict", body=body), "future", {"x": 1}]
    env = decode([msgpack.packb(items)])
    assert env.body == Verdict(ok=True, reason="fine")


def test_missing_field_with_default_takes_it() -> None:
    env = decode([frame0(type="test_codec.Holder", body={"leaf": {"text": "t", "n": 1}})])
    assert env.body == Holder(leaf=Leaf("t", 1), tags=[])


def test_int_deadline_is_read_as_float() -> None:
    env = decode([frame0(deadline=1700000000)])
    assert env.deadline == 1700000000.0 and type(env.deadline) is float


def test_plain_body_tuples_become_lists() -> None:
    env = Envelope("id", "reply", "a.b", (1, ("x", b"y")))
    assert decode(encode(env)).body == [1, ["x", b"y"]]


def test_error_reply_body_is_plain() -> None:
    env = Envelope(
        "n2.9", "error", "_inbox", {"type": "ValueError", "message": "no"}, corr="c", seq=1
    )
    assert decode(encode(env)) == env


def test_worked_example_in_docs_matches_layout() -> None:
    text = DOC.read_text()
    block = re.search(r"worked-example-hex.*?```text\n(.*?)```", text, re.S)
    assert block, "worked example block missing from docs/wire-format.md"
    doc_bytes = bytes.fromhex("".join(block.group(1).split()))
    fields = dict(
        sender="core.claude",
        reply_to="_inbox.n1.7",
        corr="n1.42",
        seq=1,
        deadline=1735689600.0,
        headers={"trace": "4bf92f35"},
    )
    expected = [1, "n1.42", "ask", "core.claude", "core.gemini", "_inbox.n1.7", "n1.42", 1]
    expected += [1735689600.0, {"trace": "4bf92f35"}, "verify.v1"]
    expected += [{"claim": "mesh is watertight"}, 0]
    assert doc_bytes == msgpack.packb(expected)
    # Our encoder writes exactly that layout (with this module's type name).
    env = Envelope("n1.42", "ask", "core.gemini", Verify("mesh is watertight"), **fields)  # type: ignore[arg-type]
    expected[10] = "test_codec.Verify"
    assert encode(env)[0] == msgpack.packb(expected)


# --------------------------------------------------------------- bad inputs


FIELD_NAMES = [
    "version",
    "id",
    "kind",
    "sender",
    "subject",
    "reply_to",
    "corr",
    "seq",
    "deadline",
    "headers",
    "type",
    "body",
    "n_attachments",
]


def items13(**over: Any) -> list[Any]:
    fields = {
        "version": WIRE_VERSION,
        "id": "id-1",
        "kind": "tell",
        "sender": None,
        "subject": "a.b",
        "reply_to": None,
        "corr": None,
        "seq": 0,
        "deadline": None,
        "headers": None,
        "type": "",
        "body": None,
        "n_attachments": 0,
    }
    unknown = set(over) - set(fields)
    assert not unknown, unknown
    fields.update(over)
    return list(fields.values())


def frame0(**over: Any) -> bytes:
    return msgpack.packb(items13(**over))


def raw_frame0(**over: bytes) -> bytes:
    """Frame 0 with some items given as raw msgpack bytes (for hand-made encodings)."""
    values = zip(FIELD_NAMES, items13(), strict=True)
    parts = [over.get(name) or msgpack.packb(value) for name, value in values]
    return b"\x9d" + b"".join(parts)


def nested_lists(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def tree_body(depth: int) -> dict[str, Any]:
    body: dict[str, Any] = {"label": "leaf", "children": []}
    for _ in range(depth):
        body = {"label": "node", "children": [body]}
    return body


VALID = frame0(type="test_codec.Verdict", body={"ok": True, "reason": "r"})
NESTED_1000 = b"\x91" * 1000 + b"\xc0"

BAD: list[Any] = [
    pytest.param([], "no frames", id="no-frames"),
    pytest.param([b""], "frame 0 is empty", id="empty-frame0"),
    pytest.param(["text"], "must be bytes", id="frame0-not-bytes"),
    pytest.param([b"\xc1"], "not valid msgpack", id="reserved-byte"),
    pytest.param([VALID[:-3]], "truncated", id="truncated"),
    pytest.param([VALID + b"\x00"], "trailing bytes", id="trailing-garbage"),
    pytest.param([msgpack.packb({"v": 1})], "must be a msgpack array, got dict", id="top-map"),
    pytest.param([msgpack.packb(1)], "must be a msgpack array, got int", id="top-int"),
    pytest.param([b"\x90"], "empty array", id="empty-array"),
    pytest.param([frame0(version=2)], "unsupported wire version 2", id="version-2"),
    pytest.param([frame0(version="1")], "unsupported wire version '1'", id="version-str"),
    pytest.param([frame0(version=True)], "unsupported wire version True", id="version-bool"),
    pytest.param([msgpack.packb(items13()[:12])], "has 12 items", id="too-few-items"),
    pytest.param([frame0(id=7)], "'id': expected str, got int", id="id-int"),
    pytest.param([frame0(kind="shout")], "unknown kind 'shout'", id="unknown-kind"),
    pytest.param([frame0(kind=None)], "'kind': expected str, got None", id="kind-nil"),
    pytest.param([frame0(sender=1)], "'sender': expected str or nil", id="sender-int"),
    pytest.param([frame0(subject="")], "'subject': must not be empty", id="subject-empty"),
    pytest.param([frame0(subject=None)], "'subject': expected str", id="subject-nil"),
    pytest.param([frame0(reply_to=b"x")], "'reply_to': expected str or nil, got bytes", id="rt"),
    pytest.param([frame0(corr=[1])], "'corr': expected str or nil, got list", id="corr-list"),
    pytest.param([frame0(seq=-1)], "'seq': must be non-negative", id="seq-negative"),
    pytest.param([frame0(seq="1")], "'seq': expected int, got str", id="seq-str"),
    pytest.param([frame0(seq=True)], "'seq': expected int, got bool", id="seq-bool"),
    pytest.param([frame0(deadline="soon")], "'deadline': expected float or nil", id="deadline"),
    pytest.param([frame0(deadline=False)], "'deadline': expected float or nil", id="dl-bool"),
    pytest.param([frame0(headers=[1])], "'headers': expected map or nil, got list", id="hdr"),
    pytest.param([frame0(headers={b"k": 1})], "map keys must be str, got bytes", id="hdr-key"),
    pytest.param([frame0(type=5)], "'type': expected str, got int", id="type-int"),
    pytest.param([frame0(n_attachments="0")], "'n_attachments': expected int", id="n-att-str"),
    pytest.param([frame0(n_attachments=2)], "announces 2 attachments but 0", id="n-att-more"),
    pytest.param([frame0(), b"att"], "announces 0 attachments but 1", id="n-att-fewer"),
    pytest.param([frame0(type="nope.Nothing", body={})], "unknown message type 'nope.Nothing'"),
    pytest.param(
        [frame0(type="test_codec.Verdict", body=[True, "r"])],
        "body of message type 'test_codec.Verdict' must be a map of its fields, got list",
        id="body-not-map",
    ),
    pytest.param(
        [frame0(type="test_codec.Verdict", body={"ok": True})],
        "field 'reason' of Verdict: missing",
        id="missing-field",
    ),
    pytest.param(
        [frame0(type="test_codec.Verdict", body={"ok": "yes", "reason": "r"})],
        "field 'ok' of Verdict: expected bool, got str",
        id="wrong-field-type",
    ),
    pytest.param(
        [frame0(type="test_codec.Verdict", body={"ok": 1, "reason": "r"})],
        "field 'ok' of Verdict: expected bool, got int",
        id="int-for-bool",
    ),
    pytest.param(
        [frame0(type="test_codec.Leaf", body={"text": "t", "n": 1.5})],
        "field 'n' of Leaf: expected int, got float",
        id="float-for-int",
    ),
    pytest.param(
        [frame0(type="test_codec.Holder", body={"leaf": {"text": 5, "n": 1}})],
        "field 'leaf.text' of Holder: expected str, got int",
        id="nested-wrong-type",
    ),
    pytest.param(
        [frame0(type="test_codec.Holder", body={"leaf": "t"})],
        "field 'leaf' of Holder: expected Leaf, got str",
        id="nested-not-map",
    ),
    pytest.param(
        [frame0(type="test_codec.Holder", body={"leaf": {"text": "t"}})],
        "field 'leaf.n' of Holder: missing",
        id="nested-missing",
    ),
    pytest.param(
        [frame0(type="test_codec.Holder", body={"leaf": {"text": "t", "n": 1}, "tags": ["a", 2]})],
        "field 'tags[1]' of Holder: expected str, got int",
        id="list-item-wrong",
    ),
    pytest.param(
        [frame0(type="test_codec.Positive", body={"value": -1})],
        "constructing Positive failed",
        id="post-init-raises",
    ),
    pytest.param(
        [frame0(type="test_codec.Unsupported", body={"when": []})],
        "message type 'test_codec.Unsupported' cannot be decoded",
        id="unsupported-annotation",
    ),
    pytest.param([raw_frame0(body=NESTED_1000)], "deeper than max_depth", id="body-1000-deep"),
    pytest.param(
        [frame0(headers={"h": nested_lists(32)})],
        "envelope field 'headers': nests deeper than max_depth",
        id="headers-deep",
    ),
    pytest.param(
        [frame0(type="test_codec.Tree", body=tree_body(20))],
        "field 'children[0].children[0]",
        id="recursive-message-deep",
    ),
    pytest.param([b"\x91" * 1500 + b"\xc0"], "nests deeper than msgpack", id="msgpack-stack"),
    # A huge str/bin needs no allocation before its bytes: it is simply truncated.
    pytest.param([b"\xdb\xff\xff\xff\xff"], "truncated", id="str32-huge"),
    pytest.param([b"\xdd\xff\xff\xff\xff"], "exceeds a size limit", id="array32-huge"),
    pytest.param([b"\xdf\xff\xff\xff\xff"], "exceeds a size limit", id="map32-huge"),
    pytest.param([b"\xc6\xff\xff\xff\xff"], "truncated", id="bin32-huge"),
    pytest.param([raw_frame0(body=b"\xdd\x7f\xff\xff\xff")], "exceeds a size limit", id="in-arr"),
    pytest.param([raw_frame0(body=b"\xd4\x05\x00")], "ext type", id="fixext1"),
    pytest.param([raw_frame0(body=b"\xc7\x00\x05")], "ext type 5", id="empty-ext8"),
    pytest.param([raw_frame0(body=b"\xd6\xff\x00\x00\x00\x01")], "ext type", id="timestamp"),
    pytest.param([raw_frame0(body=b"\x81\x01\xa1a")], "map key that is not str", id="int-key"),
    pytest.param([raw_frame0(body=b"\x81\xc4\x01k\x01")], "map keys must be str", id="bin-key"),
    pytest.param(
        [
            raw_frame0(
                type=msgpack.packb("test_codec.Verify"), body=b"\x82\xa5claim\xa1x\xc4\x01k\x01"
            )
        ],
        "field names must be str, got bytes",
        id="typed-bin-key",
    ),
    pytest.param([raw_frame0(subject=b"\xa2\xff\xfe")], "not valid UTF-8", id="bad-utf8"),
    pytest.param([frame0(), *([b"x"] * 65)], "too many frames: 66", id="too-many-frames"),
    pytest.param(42, "frames must be a sequence", id="frames-not-sequence"),
]


@pytest.mark.parametrize(("frames", "reason"), BAD)
def test_bad_input_raises_decode_error(frames: Any, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(frames)
    assert reason in info.value.reason, info.value.reason
    assert str(info.value) == info.value.reason


def test_bad_inputs_are_many_and_distinct() -> None:
    assert len(BAD) >= 20
    assert len({repr(p.values[0]) for p in BAD}) == len(BAD)


def test_oversized_frame0_is_refused_before_unpacking() -> None:
    limits = CodecLimits(max_frame=64)
    frame = frame0(body="x" * 100)
    with pytest.raises(DecodeError, match=r"frame 0 is \d+ bytes, over the limit of 64"):
        decode([frame], limits)
    # Not even valid msgpack: the size check comes first.
    with pytest.raises(DecodeError, match="over the limit"):
        decode([b"\xc1" * 65], limits)


def test_container_limits_apply_to_large_frames() -> None:
    limits = CodecLimits(max_array=15, max_map=10, max_str=50)
    with pytest.raises(DecodeError, match=r"exceeds max_array_len\(15\)"):
        decode([frame0(body=list(range(20)))], limits)
    with pytest.raises(DecodeError, match=r"exceeds max_map_len\(10\)"):
        decode([frame0(body={str(i): i for i in range(11)})], limits)
    with pytest.raises(DecodeError, match=r"exceeds max_str_len\(50\)"):
        decode([frame0(body="x" * 51)], limits)
    assert decode([frame0(body=list(range(10)))], limits).body == list(range(10))


def test_custom_depth_limit() -> None:
    limits = CodecLimits(max_depth=2)
    assert decode([frame0(body=[[1]])], limits).body == [[1]]
    with pytest.raises(DecodeError, match="deeper than max_depth"):
        decode([frame0(body=[[[1]]])], limits)
    holder = {"leaf": {"text": "t", "n": 1}}
    assert decode([frame0(type="test_codec.Holder", body=holder)], limits).body.leaf.n == 1
    with pytest.raises(DecodeError, match="field 'leaf' of Holder: nests deeper"):
        decode([frame0(type="test_codec.Holder", body=holder)], CodecLimits(max_depth=1))


def test_attachment_limit() -> None:
    limits = CodecLimits(max_attachments=1)
    assert decode([frame0(n_attachments=1), b"a"], limits).attachments == (b"a",)
    with pytest.raises(DecodeError, match="too many frames: 3"):
        decode([frame0(n_attachments=2), b"a", b"b"], limits)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode([data])


@settings(max_examples=300)
@given(st.lists(PLAIN, min_size=0, max_size=15), st.integers(0, 2))
def test_fuzz_arbitrary_arrays_only_decode_error(items: list[Any], n_att: int) -> None:
    if items:
        items[0] = WIRE_VERSION
    with contextlib.suppress(DecodeError):
        decode([msgpack.packb(items), *([b"x"] * n_att)])


@settings(max_examples=300)
@given(st.data())
def test_fuzz_mutated_valid_frames_only_decode_error(data: st.DataObject) -> None:
    frame = bytearray(
        encode(Envelope("id", "ask", "a.b", Holder(Leaf("t", 3), ["x"]), headers={"k": [1]}))[0]
    )
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(frame)))
    with contextlib.suppress(DecodeError):
        decode([bytes(frame[:cut])])


@settings(max_examples=200)
@given(st.sampled_from(["test_codec.Everything", "test_codec.Holder", "test_codec.Tree"]), PLAIN)
def test_fuzz_typed_bodies_only_decode_error(type_name: str, body: Any) -> None:
    with contextlib.suppress(DecodeError):
        decode([frame0(type=type_name, body=body)])


# --------------------------------------------------------------- encode errors


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(object(), id="object"),
        pytest.param(NotAMessage(), id="plain-class"),
        pytest.param(PlainDataclass(1), id="unregistered-dataclass"),
        pytest.param({1, 2}, id="set"),
        pytest.param([1, object()], id="nested-object"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param([Verify("x")], id="message-inside-plain"),
    ],
)
def test_encode_refuses_non_plain_body(body: Any) -> None:
    with pytest.raises(TypeError, match="cannot encode body"):
        encode(Envelope("id", "tell", "a.b", body))


def test_encode_refuses_wrong_field_types() -> None:
    with pytest.raises(TypeError, match="field 'ok' of Verdict: expected bool, got str"):
        encode(Envelope("id", "tell", "a.b", Verdict(ok="yes", reason="r")))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="field 'n' of Leaf: expected int, got bool"):
        encode(Envelope("id", "tell", "a.b", Leaf("t", True)))
    bad_holder = Holder(leaf=Leaf("t", 1), tags=["a", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"field 'tags\[1\]' of Holder: expected str, got int"):
        encode(Envelope("id", "tell", "a.b", bad_holder))
    with pytest.raises(TypeError, match=r"field 'leaf\.text' of Holder"):
        encode(Envelope("id", "tell", "a.b", Holder(leaf=Leaf(1, 1))))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unsupported annotation"):
        encode(Envelope("id", "tell", "a.b", Unsupported({1})))


def test_encode_accepts_bytes_like_and_int_for_float() -> None:
    msg = Everything(
        s="s", i=1, f=2, b=False, raw=bytearray(b"ab"), opt=None, items=[1], seq=("a",),
        pair=(1, "b"), mapping={"x": 1}, leaf=Leaf("t", 0), maybe_leaf=None, leaves=[],
        anything=None, union=None,
    )  # fmt: skip
    decoded = decode(encode(Envelope("id", "tell", "a.b", msg))).body
    assert decoded.raw == b"ab" and type(decoded.raw) is bytes
    assert decoded.f == 2.0 and type(decoded.f) is float


class Name(str):
    """A str subclass: an envelope field may be one."""


def test_encode_checks_envelope_and_limits() -> None:
    with pytest.raises(ValueError, match="does not match its body"):
        encode(Envelope("id", "tell", "a.b", Verify("x"), type="test_codec.Leaf"))
    with pytest.raises(TypeError, match="needs a body of that @message class"):
        encode(Envelope("id", "tell", "a.b", {"claim": "x"}, type="test_codec.Verify"))
    with pytest.raises(ValueError, match="unknown kind"):
        encode(Envelope("id", "shout", "a.b"))
    with pytest.raises(ValueError, match="subject"):
        encode(Envelope("id", "tell", ""))
    with pytest.raises(ValueError, match="seq"):
        encode(Envelope("id", "tell", "a.b", seq=-1))
    with pytest.raises(ValueError, match="seq must be a non-negative int, got True"):
        encode(Envelope("id", "tell", "a.b", seq=True))
    with pytest.raises(TypeError, match="envelope sender must be str or None, got int"):
        encode(Envelope("id", "tell", "a.b", sender=1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="envelope id must be str"):
        encode(Envelope(7, "tell", "a.b"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="deadline must be float or None"):
        encode(Envelope("id", "tell", "a.b", deadline="soon"))  # type: ignore[arg-type]
    # what the shortcut for a node's own envelopes leaves to the field checks, and they accept
    assert decode(encode(Envelope("id", "tell", "a.b", deadline=5, sender=Name("s")))).sender == "s"
    with pytest.raises(TypeError, match="headers"):
        encode(Envelope("id", "tell", "a.b", headers={"k": object()}))
    with pytest.raises(ValueError, match="over the limit of 64"):
        encode(Envelope("id", "tell", "a.b", "x" * 100), CodecLimits(max_frame=64))
    with pytest.raises(ValueError, match="nests deeper than max_depth"):
        encode(Envelope("id", "tell", "a.b", [[[1]]]), CodecLimits(max_depth=2))
    with pytest.raises(ValueError, match="attachments, over the limit"):
        encode(
            Envelope("id", "tell", "a.b", attachments=(b"a", b"b")), CodecLimits(max_attachments=1)
        )
    with pytest.raises(ValueError, match="exceeds a codec limit"):
        encode(Envelope("id", "tell", "a.b", list(range(20))), CodecLimits(max_array=15))
    with pytest.raises(ValueError, match="out of msgpack range"):
        encode(Envelope("id", "tell", "a.b", 2**70))


def test_recursive_message_round_trip() -> None:
    tree = Tree("root", [Tree("a", []), Tree("b", [Tree("c", [])])])
    assert decode(encode(Envelope("id", "tell", "a.b", tree))).body == tree


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        CodecLimits(max_depth=0)
    with pytest.raises(ValueError, match="max_frame"):
        CodecLimits(max_frame=-1)
    with pytest.raises(ValueError, match="max_array"):
        CodecLimits(max_array=12)
    assert DEFAULT_LIMITS.max_frame == 16 * 1024 * 1024
    assert DEFAULT_LIMITS.max_bin == 64 * 1024 * 1024
    assert DEFAULT_LIMITS.attachment_threshold == 64 * 1024
    assert DEFAULT_LIMITS.max_attachment_bytes == 2 * 1024**3
    with pytest.raises(ValueError, match="attachment_threshold"):
        CodecLimits(attachment_threshold=-1)


def test_timestamp_ext_is_refused_anywhere() -> None:
    stamp = msgpack.Timestamp(1)
    for frame in (
        frame0(headers={"t": stamp}),
        frame0(body=[1, {"k": stamp}]),
        frame0(type="test_codec.Everything", body={"anything": stamp}),
        msgpack.packb([*items13(), stamp]),  # even in an ignored trailing item
    ):
        with pytest.raises(DecodeError, match=r"Timestamp \(ext type -1\)"):
            decode([frame])
