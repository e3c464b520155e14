"""Attachments: large buffer fields of a @message travel as frames of their own.

Round trips per buffer kind and annotation around the threshold, the zero-copy
promises on both sides, a 100 MB array, every malformed reference, and a
Hypothesis property over messages with buffers of sizes around the threshold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from synaptic_mesh.runtime.codec import DEFAULT_LIMITS, CodecLimits, decode, encode
from synaptic_mesh.runtime.envelope import WIRE_VERSION, Envelope
from synaptic_mesh.runtime.errors import DecodeError
from synaptic_mesh.runtime.messages import message

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
THRESHOLD = DEFAULT_LIMITS.attachment_threshold
SMALL = CodecLimits(attachment_threshold=32)  # for the property: sizes stay small

# --------------------------------------------------------------- messages


@message(name="test_att.Raw")
class Raw:
    raw: bytes


@message(name="test_att.View")
class View:
    view: memoryview


@message(name="test_att.Arr")
class Arr:
    arr: np.ndarray


@message(name="test_att.Anything")
class Anything:
    value: Any


@message(name="test_att.Float32")
class Float32:
    arr: npt.NDArray[np.float32]


@message(name="test_att.Floating")
class Floating:
    arr: npt.NDArray[np.floating]


@message(name="test_att.Inner")
class Inner:
    label: str
    arr: np.ndarray


@message(name="test_att.Outer")
class Outer:
    inner: Inner
    blobs: list[bytes]
    maybe: np.ndarray | None = None
    table: dict[str, bytes] = dataclasses.field(default_factory=dict)
    pair: tuple[bytes, memoryview] | None = None


@message(name="test_att.Two")
class Two:
    first: bytes
    second: bytes


@message(name="test_att.Either")
class Either:
    value: bytes | np.ndarray


@message(name="test_att.Plain")
class Plain:
    a: str
    b: int


@message(name="scan.v1")  # the example of docs/wire-format.md
class Scan:
    tile: str
    points: np.ndarray
    thumb: bytes


def env_of(body: Any, **kw: Any) -> Envelope:
    return Envelope("id", "tell", "a.b", body, **kw)


def owner(array: np.ndarray) -> Any:
    """The object at the end of an array's base chain (a memoryview's exporter)."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def exporter(frame: Any) -> Any:
    return frame.obj if isinstance(frame, memoryview) else frame


def as_u8(buffer: Any) -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.uint8)


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (bit for bit, so NaNs compare equal)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --------------------------------------------------------------- round trips

SIZES = [0, 1, THRESHOLD - 1, THRESHOLD, THRESHOLD + 1, 3 * THRESHOLD]


def buffers(size: int) -> list[Any]:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    return [data, bytearray(data), memoryview(data), memoryview(bytearray(data))]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "memoryview-rw"])
@pytest.mark.parametrize("cls", [Raw, View, Anything])
def test_raw_buffer_round_trip(size: int, kind: str, cls: type) -> None:
    value = buffers(size)[["bytes", "bytearray", "memoryview", "memoryview-rw"].index(kind)]
    frames = encode(env_of(cls(value)))
    attached = size >= THRESHOLD
    assert len(frames) == (2 if attached else 1)
    if attached:
        assert buffer_len(frames[1]) == size
        assert len(frames[0]) < 200  # the data is not in frame 0
    decoded = decode(frames).body
    got = getattr(decoded, dataclasses.fields(cls)[0].name)
    assert bytes(got) == bytes(value)
    if cls is Raw or (cls is Anything and not attached):
        assert type(got) is bytes
    else:
        assert type(got) is memoryview and got.readonly and got.format == "B"
    assert decode(frames).attachments == ()


def buffer_len(frame: Any) -> int:
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)


ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
    np.arange(40, dtype=np.uint16)[::3],  # not contiguous
    np.array(2.5),  # zero dimensions
    np.zeros((0, 5), dtype=np.complex64),
    np.array([True, False, True]),
    np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian
    np.ones((2, 3, 4, 5), dtype=np.float16),
]


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, CodecLimits(attachment_threshold=0)])
@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{list(a.shape)}")
@pytest.mark.parametrize("cls", [Arr, Anything])
def test_array_round_trip(array: np.ndarray, cls: type, limits: CodecLimits) -> None:
    frames = encode(env_of(cls(array)), limits)
    attached = array.nbytes >= limits.attachment_threshold
    assert len(frames) == (2 if attached else 1)
    got = getattr(decode(frames, limits).body, dataclasses.fields(cls)[0].name)
    assert type(got) is np.ndarray
    assert same_array(got, array)
    assert not got.flags.writeable
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert got.flags.f_contiguous  # sent as is, with order "F"


def test_large_array_round_trip_keeps_layout_and_values() -> None:
    array = np.random.default_rng(1).standard_normal((300, 200)).astype(np.float32)
    for value in (array, np.asfortranarray(array), array[::2, ::3]):
        frames = encode(env_of(Arr(value)))
        assert len(frames) == (2 if value.nbytes >= THRESHOLD else 1)
        got = decode(frames).body.arr
        assert same_array(got, value)


def test_nested_lists_dicts_unions_and_tuples() -> None:
    big = b"B" * THRESHOLD
    arr = np.arange(THRESHOLD, dtype=np.uint8)
    msg = Outer(
        inner=Inner("x", np.arange(20_000, dtype=np.float64)),
        blobs=[big, b"tiny", bytearray(big)],
        maybe=arr,
        table={"k": big, "s": b"s"},
        pair=(big, memoryview(big)),
    )
    frames = encode(env_of(msg))
    # inner.arr, blobs[0], blobs[2], maybe, table["k"], pair[0], pair[1]
    assert len(frames) == 1 + 7
    got = decode(frames).body
    assert same_array(got.inner.arr, msg.inner.arr) and got.inner.label == "x"
    assert got.blobs == [big, b"tiny", big] and all(type(b) is bytes for b in got.blobs)
    assert same_array(got.maybe, arr)
    assert got.table == {"k": big, "s": b"s"}
    assert got.pair[0] == big and type(got.pair[1]) is memoryview and got.pair[1] == big
    empty = decode(encode(env_of(Outer(Inner("y", np.zeros(1)), [])))).body
    assert empty.maybe is None and empty.blobs == []


def test_union_of_bytes_and_array_picks_by_reference() -> None:
    for value in (b"x" * THRESHOLD, np.arange(THRESHOLD // 8, dtype=np.int64), b"small"):
        got = decode(encode(env_of(Either(value)))).body.value
        if isinstance(value, bytes):
            assert type(got) is bytes and got == value
        else:
            assert same_array(got, value)


def test_own_attachments_come_first_and_come_back() -> None:
    big = b"F" * THRESHOLD
    env = env_of(Two(big, b"small"), attachments=(b"own-1", memoryview(b"own-2")))
    frames = encode(env)
    assert len(frames) == 4
    assert frames[1] == b"own-1" and frames[2] == b"own-2" and frames[3] is big
    decoded = decode(frames)
    assert decoded.attachments == (b"own-1", b"own-2")
    assert decoded.attachments[1] is frames[2]
    assert decoded.body == Two(big, b"small")
    assert env.attachments == (b"own-1", memoryview(b"own-2"))  # unchanged by encode
    assert decoded == env


def test_n_attachments_counts_every_frame() -> None:
    frames = encode(env_of(Outer(Inner("x", np.zeros(THRESHOLD)), [b"b" * THRESHOLD] * 3)))
    assert msgpack.unpackb(frames[0], ext_hook=lambda c, d: None)[12] == len(frames) - 1 == 4
    many = [b"m" * THRESHOLD] * 130  # a two-byte count
    limits = CodecLimits(max_attachments=200)
    frames = encode(env_of(Outer(Inner("x", np.zeros(1)), many)), limits)
    assert len(frames) == 131
    assert decode(frames, limits).body.blobs == many


def test_small_buffers_and_no_numpy_fields_do_not_change_frame0() -> None:
    # Below the threshold a bytes field is plain bin, exactly as before.
    frames = encode(env_of(Raw(b"abc")))
    body = msgpack.unpackb(frames[0])[11]
    assert body == {"raw": b"abc"}


def test_schema_without_buffers_and_plain_bodies_stay_inline() -> None:
    big = b"p" * (2 * THRESHOLD)
    frames = encode(env_of({"blob": big}))  # a plain body: never references
    assert len(frames) == 1 and decode(frames).body == {"blob": big}
    frames = encode(env_of(Plain("a", 1), headers={"h": big}))
    assert len(frames) == 1


# --------------------------------------------------------------- zero copy


def test_encode_does_not_copy() -> None:
    data = b"z" * THRESHOLD
    assert encode(env_of(Raw(data)))[1] is data
    ba = bytearray(THRESHOLD)
    frame = encode(env_of(Raw(ba)))[1]
    assert isinstance(frame, memoryview) and frame.obj is ba
    view = memoryview(np.zeros((64, 512), dtype=np.float64))  # 2-D, format "d"
    frame = encode(env_of(View(view)))[1]
    assert frame.format == "B" and frame.ndim == 1 and frame.nbytes == view.nbytes
    assert np.shares_memory(as_u8(frame), np.asarray(view))
    array = np.ones((256, 256), dtype=np.float32)
    frame = encode(env_of(Arr(array)))[1]
    assert np.shares_memory(as_u8(frame), array)
    fortran = np.asfortranarray(array)
    assert np.shares_memory(as_u8(encode(env_of(Arr(fortran)))[1]), fortran)
    strided = np.ones((512, 256), dtype=np.float32)[::2]  # copied once: documented
    assert not np.shares_memory(as_u8(encode(env_of(Arr(strided)))[1]), strided)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_decode_does_not_copy(wrap: Any) -> None:
    payload = np.arange(THRESHOLD, dtype=np.float32)
    frames = encode(env_of(Arr(payload)))
    frame = wrap(frames[1])  # what a transport hands over
    got = decode([frames[0], frame]).body.arr
    assert owner(got) is exporter(frame)
    assert np.shares_memory(got, as_u8(frame))
    assert not got.flags.writeable

    raw = wrap(b"r" * THRESHOLD)
    frames = encode(env_of(View(b"r" * THRESHOLD)))
    view = decode([frames[0], raw]).body.view
    assert view.readonly and view.obj is exporter(raw)
    frames = encode(env_of(Anything(b"r" * THRESHOLD)))
    view = decode([frames[0], raw]).body.value
    assert isinstance(view, memoryview) and view.obj is exporter(raw)


def test_forwarding_a_decoded_message_does_not_copy() -> None:
    # An actor that passes on what it received: read-only views re-encode as is.
    array = np.arange(THRESHOLD, dtype=np.float64).reshape(-1, 8)
    first = encode(env_of(Outer(Inner("x", array), [b"b" * THRESHOLD], maybe=array[:, :1])))
    received = decode(first).body
    second = encode(env_of(received))
    assert len(second) == len(first) == 4
    assert np.shares_memory(as_u8(second[1]), as_u8(first[1]))  # inner.arr
    assert second[2] is first[2]  # the bytes frame itself
    again = decode(second).body
    assert same_array(again.inner.arr, array) and same_array(again.maybe, array[:, :1])


@message(name="test_att.Node")
class Node:
    payload: bytes
    children: list[Node]


def test_recursive_message_with_buffers() -> None:
    big = b"n" * THRESHOLD
    tree = Node(big, [Node(b"leaf", []), Node(big, [Node(big, [])])])
    frames = encode(env_of(tree))
    assert len(frames) == 4
    assert decode(frames).body == tree


def test_bytes_field_gets_the_frame_itself_or_a_copy() -> None:
    data = b"q" * THRESHOLD
    frames = encode(env_of(Raw(data)))
    assert decode(frames).body.raw is data  # a bytes frame: no copy
    got = decode([frames[0], memoryview(bytearray(data))]).body.raw
    assert type(got) is bytes and got == data  # a memoryview frame: bytes must own memory


def test_100_mb_float32_round_trip_is_fast_and_shares_memory() -> None:
    array = np.arange(25 * 1024 * 1024, dtype=np.float32)  # 100 MiB
    assert array.nbytes == 100 * 1024 * 1024
    start = time.perf_counter()
    frames = encode(env_of(Arr(array)))
    got = decode(frames).body.arr
    elapsed = time.perf_counter() - start
    assert len(frames) == 2 and len(frames[0]) < 100
    assert np.shares_memory(got, as_u8(frames[1]))
    assert np.shares_memory(got, array)  # in process: the very same memory
    assert got.shape == array.shape and got[-1] == array[-1]
    # No copy: microseconds, where one copy of 100 MiB takes tens of milliseconds
    # (the bound is loose for a loaded machine; shares_memory is the real check).
    assert elapsed < 0.5, f"{elapsed * 1e3:.1f} ms"


def test_decoded_views_are_read_only() -> None:
    frames = encode(env_of(Arr(np.zeros(THRESHOLD))))
    got = decode([frames[0], bytearray(frames[1])]).body.arr
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 1.0
    frames = encode(env_of(View(bytearray(THRESHOLD))))
    view = decode([frames[0], bytearray(THRESHOLD)]).body.view
    with pytest.raises(TypeError):
        view[0] = 1


# --------------------------------------------------------------- dtype annotations


def test_ndarray_dtype_annotations() -> None:
    ok = np.arange(10, dtype=">f4")  # float32 in either byte order
    assert same_array(decode(encode(env_of(Float32(ok)))).body.arr, ok)
    with pytest.raises(TypeError, match="expected an array of float32, got dtype int32"):
        encode(env_of(Float32(np.arange(3, dtype=np.int32))))
    for dtype in (np.float16, np.float64):
        value = np.ones(3, dtype=dtype)
        assert same_array(decode(encode(env_of(Floating(value)))).body.arr, value)
    with pytest.raises(TypeError, match="expected an array of floating"):
        encode(env_of(Floating(np.ones(3, dtype=np.int8))))
    body = {"arr": ref([0, "<i4", [1], "C"], data=b"\x00" * 4)}
    with pytest.raises(DecodeError, match="field 'arr' of Float32: expected an array of float32"):
        decode([frame0(type="test_att.Float32", body=body)])


# --------------------------------------------------------------- encode errors


def test_encode_refuses_what_a_peer_must_refuse() -> None:
    with pytest.raises(TypeError, match="dtype object cannot travel"):
        encode(env_of(Arr(np.array([object()]))))
    with pytest.raises(TypeError, match="dtype <U3 cannot travel"):
        encode(env_of(Anything(np.array(["abc"]))))
    with pytest.raises(TypeError, match="subclass"):
        encode(env_of(Arr(np.ma.masked_array([1, 2], mask=[0, 1]))))
    with pytest.raises(TypeError, match="field 'arr' of Arr: expected ndarray, got bytes"):
        encode(env_of(Arr(b"x")))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"numpy\.ndarray is not a plain msgpack value"):
        encode(env_of({"a": np.zeros(3)}))
    with pytest.raises(ValueError, match="over 32"):
        encode(env_of(Arr(np.zeros((1,) * 33))))
    with pytest.raises(ValueError, match=r"3 attachments, over the limit of 2 \(2 of them"):
        encode(env_of(Two(b"a" * 64, b"b" * 64), attachments=(b"own",)), limits(64, atts=2))
    with pytest.raises(ValueError, match="attachments total 128 bytes, over the limit of 100"):
        encode(env_of(Two(b"a" * 64, b"b" * 64)), limits(64, max_bytes=100))
    with pytest.raises(TypeError, match="attachment 1 must be a buffer"):
        encode(env_of(Plain("a", 1), attachments=("text",)))


def limits(threshold: int, *, atts: int = 64, max_bytes: int = 2**31) -> CodecLimits:
    return CodecLimits(
        attachment_threshold=threshold, max_attachments=atts, max_attachment_bytes=max_bytes
    )


def test_a_failed_encode_leaves_nothing_behind() -> None:
    @message(name="test_att.Overflow")
    class Overflow:
        blob: bytes
        n: int

    with pytest.raises(ValueError, match="out of msgpack range"):
        encode(env_of(Overflow(b"x" * THRESHOLD, 2**70)))
    frames = encode(env_of(Raw(b"y" * THRESHOLD)))
    assert len(frames) == 2 and frames[1] == b"y" * THRESHOLD


def test_threads_encode_with_their_own_limits() -> None:
    def work(i: int) -> None:
        lim = CodecLimits(attachment_threshold=16 + i % 7)
        for n in range(200):
            value = bytes([i]) * (n % 40)
            frames = encode(env_of(Two(value, value), attachments=(b"o",) * (i % 3)), lim)
            attached = len(value) >= lim.attachment_threshold
            assert len(frames) == 1 + i % 3 + (2 if attached else 0)
            decoded = decode(frames, lim)
            assert decoded.body == Two(value, value)
            assert decoded.attachments == (b"o",) * (i % 3)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(16)))


# --------------------------------------------------------------- bad input


def ref(items: list[Any] | bytes, data: bytes | None = None) -> msgpack.ExtType:
    if data is not None:
        assert isinstance(items, list)
        items = [data, *items[1:]]
    payload = items if isinstance(items, bytes) else msgpack.packb(items)
    return msgpack.ExtType(1, payload)


def frame0(**over: Any) -> bytes:
    fields: dict[str, Any] = {
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
    fields.update(over)
    return msgpack.packb(list(fields.values()))


def typed(type_: str, body: dict[str, Any], *frames: Any, **over: Any) -> list[Any]:
    return [frame0(type=type_, body=body, n_attachments=len(frames), **over), *frames]


F12 = b"\x00" * 12
BAD_REFS: list[Any] = [
    pytest.param(
        typed("test_att.Raw", {"raw": ref([2])}, b"x"),
        "field 'raw' of Raw: attachment reference to frame 2, but only 1 attachment frame(s)",
        id="index-out-of-range",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref([1])}),
        "attachment reference to frame 1, but no attachment frames follow frame 0",
        id="no-frames",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref([0])}, b"x"),
        "malformed attachment reference: frame number must be an int >= 1, got 0",
        id="index-zero",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref([-1])}, b"x"), "frame number must be", id="negative"
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref([True])}, b"x"), "frame number must be", id="bool"
    ),
    pytest.param(
        typed("test_att.Two", {"first": ref([1]), "second": ref([1])}, b"x"),
        "field 'second' of Two: frame 1 is referenced twice",
        id="duplicate",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f4", [3], "C"])}, b"\x00" * 10),
        "field 'arr' of Arr: frame 1 is 10 bytes, but shape [3] of <f4 needs 12",
        id="length-mismatch",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f4", [2, 2], "C"])}, F12),
        "needs 16",
        id="length-mismatch-2d",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([0, "<f4", [4], "C"], data=F12)}),
        "inline data is 12 bytes, but shape [4] of <f4 needs 16",
        id="inline-length-mismatch",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "|O8", [1], "C"])}, b"\x00" * 8),
        "dtype '|O8' is not allowed",
        id="dtype-object",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "O", [1], "C"])}, b"\x00" * 8),
        "dtype 'O' is not allowed",
        id="dtype-O",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<U3", [1], "C"])}, F12),
        "dtype '<U3' is not allowed",
        id="dtype-str",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<M8", [1], "C"])}, b"\x00" * 8),
        "dtype '<M8' is not allowed",
        id="dtype-datetime",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "[('a', '<i4')]", [1], "C"])}, b"\x00" * 4),
        "is not allowed",
        id="dtype-structured",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f3", [1], "C"])}, b"\x00" * 3),
        "dtype '<f3' is unknown here",
        id="dtype-no-such-size",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, 4, [1], "C"])}, b"\x00" * 4),
        "dtype 4 is not allowed",
        id="dtype-int",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f4", [-1], "C"])}, b""),
        "shape [-1] must hold non-negative ints",
        id="negative-shape",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f4", [2**40, 2**40, 0], "C"])}, b""),
        "overflows 2**63 - 1 bytes",
        id="shape-overflow",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f8", [2**31, 2**31], "C"])}, b""),
        "overflows",
        id="shape-overflow-2",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f4", [1] * 33, "C"])}, b"\x00" * 4),
        "malformed attachment reference",
        id="too-many-dims",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f4", 3, "C"])}, F12),
        "shape must be an array",
        id="shape-int",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f4", [1.5], "C"])}, F12),
        "must hold non-negative ints",
        id="shape-float",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f4", [3], "K"])}, F12),
        "order must be 'C' or 'F', got 'K'",
        id="bad-order",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1, "<f4", [3]])}, F12),
        "expected [frame] or [frame_or_bin, dtype, shape, order], got 3 items",
        id="three-items",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([None, "<f4", [3], "C"])}, F12),
        "first item must be a frame number or bin, got None",
        id="first-item-nil",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref({"frame": 1})}, b"x"),  # type: ignore[arg-type]
        "its data must be a msgpack array, got dict",
        id="data-map",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref(b"\x91\x01\x00")}, b"x"),
        "its data is not one msgpack array",
        id="data-trailing",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref(b"")}, b"x"),
        "its data is not one msgpack array",
        id="data-empty",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref(b"\xc1")}, b"x"),
        "its data is not one msgpack array",
        id="data-garbage",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref([1, "<f4", [1], "C"])}, b"x" * 4),
        "field 'raw' of Raw: expected a raw buffer, got an ndarray reference",
        id="array-ref-for-bytes",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": ref([1])}, b"x"),
        "field 'arr' of Arr: expected an ndarray reference, got a raw buffer reference",
        id="raw-ref-for-array",
    ),
    pytest.param(
        typed("test_att.Arr", {"arr": b"\x00" * 4}),
        "field 'arr' of Arr: expected ndarray, got bytes",
        id="bin-for-array",
    ),
    pytest.param(
        typed("test_att.Plain", {"a": ref([1]), "b": 1}, b"x"),
        "field 'a' of Plain: expected str, got attachment reference",
        id="ref-in-str-field",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": b"x", "extra": ref([1])}, b"x"),
        "1 attachment reference(s) where no buffer field takes one",
        id="ref-in-unknown-field",
    ),
    pytest.param(
        typed("test_att.Anything", {"value": [ref([1])]}, b"x"),
        "where no buffer field takes one",
        id="ref-inside-any-list",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": b"x"}, b"x", headers={"h": ref([1])}),
        "where no buffer field takes one",
        id="ref-in-headers",
    ),
    pytest.param(
        [frame0(body={"raw": ref([1])}, n_attachments=1), b"x"],
        "holds 1 attachment reference(s) but no typed message",
        id="ref-in-plain-body",
    ),
    pytest.param(
        [msgpack.packb([*msgpack.unpackb(frame0(n_attachments=1)), ref([1])]), b"x"],
        "holds 1 attachment reference(s) but no typed message",
        id="ref-in-trailing-item",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref([1])}, "text"),
        "frame 1 must be bytes, bytearray or memoryview, got str",
        id="frame-not-buffer",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": ref([1])}, b"x", headers={"t": msgpack.Timestamp(1)}),
        "frame 0 holds a msgpack Timestamp (ext type -1)",
        id="timestamp-next-to-ref",
    ),
    pytest.param(
        typed("test_att.Raw", {"raw": msgpack.ExtType(2, b"\x91\x01")}, b"x"),
        "ext type 2; ext types are refused",
        id="other-ext-code",
    ),
]


@pytest.mark.parametrize(("frames", "reason"), BAD_REFS)
def test_bad_references_raise_decode_error(frames: list[Any], reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(frames)
    assert reason in info.value.reason, info.value.reason


def test_total_attachment_bytes_limit() -> None:
    lim = CodecLimits(max_attachment_bytes=10)
    frames = typed("test_att.Raw", {"raw": ref([1])}, b"x" * 11)
    with pytest.raises(DecodeError, match="attachment frames total 11 bytes, over the limit of 10"):
        decode(frames, lim)
    assert decode(typed("test_att.Raw", {"raw": ref([1])}, b"x" * 10), lim).body.raw == b"x" * 10


def test_hand_built_references_decode() -> None:
    # What a foreign client writes: references in any frame order, own frames between.
    arr = np.arange(6, dtype="<i2")
    frames = typed(
        "test_att.Outer",
        {
            "inner": {"label": "l", "arr": ref([3, "<i2", [2, 3], "F"])},
            "blobs": [ref([1]), b"inline"],
        },
        b"blob",
        b"own",
        arr.tobytes(),
    )
    env = decode(frames)
    assert env.body.blobs == [b"blob", b"inline"]
    assert same_array(env.body.inner.arr, arr.reshape((2, 3), order="F"))
    assert env.attachments == (b"own",)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_frames_with_references_only_decode_error(data: st.DataObject) -> None:
    msg = Outer(Inner("t", np.arange(8, dtype=np.int16)), [b"b" * 40, b"s"], table={"k": b"v" * 40})
    frames = encode(env_of(msg), SMALL)
    frame = bytearray(frames[0])
    for _ in range(data.draw(st.integers(1, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(frame)))
    rest = data.draw(st.lists(st.sampled_from([*frames[1:], b"", b"\x00" * 16]), max_size=5))
    with contextlib.suppress(DecodeError):
        decode([bytes(frame[:cut]), *rest], SMALL)


# --------------------------------------------------------------- property


@message(name="test_att.Mixed")
class Mixed:
    raw: bytes
    view: memoryview
    arr: np.ndarray
    anything: Any
    inner: Inner
    blobs: list[bytes]
    maybe: np.ndarray | None


DTYPES = st.sampled_from(
    ["|b1", "|i1", "<i2", ">i4", "<i8", "|u1", "<u4", "<f2", "<f4", ">f8", "<c8"]
)
SIZES_AROUND = st.integers(0, 2 * SMALL.attachment_threshold + 8)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    array = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        array = np.repeat(array, 2, axis=0)[::2]
    return array


RAW = SIZES_AROUND.flatmap(lambda n: st.binary(min_size=n, max_size=n))
RAW_LIKE = st.one_of(RAW, RAW.map(bytearray), RAW.map(memoryview))
MIXED = st.builds(
    Mixed,
    raw=RAW_LIKE,
    view=RAW_LIKE,
    arr=arrays(),
    anything=st.one_of(
        RAW, arrays(), st.integers(-(2**63), 2**64 - 1), st.lists(st.text(max_size=3), max_size=3)
    ),
    inner=st.builds(Inner, label=st.text(max_size=5), arr=arrays()),
    blobs=st.lists(RAW, max_size=3),
    maybe=st.none() | arrays(),
)


def expected_frames(msg: Mixed, threshold: int) -> int:
    buffers = [msg.raw, msg.view, *msg.blobs]
    if isinstance(msg.anything, bytes):
        buffers.append(msg.anything)
    count = sum(len(memoryview(b).cast("B")) >= threshold for b in buffers)
    arrays_ = [msg.arr, msg.inner.arr, msg.maybe, msg.anything]
    count += sum(a.nbytes >= threshold for a in arrays_ if isinstance(a, np.ndarray))
    return count


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(MIXED, st.lists(st.binary(max_size=8), max_size=2).map(tuple))
def test_property_round_trip_around_threshold(msg: Mixed, own: tuple[bytes, ...]) -> None:
    frames = encode(env_of(msg, attachments=own), SMALL)
    assert len(frames) == 1 + len(own) + expected_frames(msg, SMALL.attachment_threshold)
    assert tuple(frames[1 : 1 + len(own)]) == own
    env = decode(frames, SMALL)
    got = env.body
    assert env.attachments == own
    assert got.raw == bytes(msg.raw) and type(got.raw) is bytes
    assert got.view == bytes(msg.view) and type(got.view) is memoryview and got.view.readonly
    for mine, theirs in [(got.arr, msg.arr), (got.inner.arr, msg.inner.arr)]:
        assert same_array(mine, theirs) and not mine.flags.writeable
    assert got.inner.label == msg.inner.label
    assert got.blobs == [bytes(b) for b in msg.blobs]
    if msg.maybe is None:
        assert got.maybe is None
    else:
        assert same_array(got.maybe, msg.maybe)
    if isinstance(msg.anything, np.ndarray):
        assert same_array(got.anything, msg.anything)
    elif isinstance(msg.anything, bytes):
        assert bytes(got.anything) == msg.anything
        big = len(msg.anything) >= SMALL.attachment_threshold
        assert type(got.anything) is (memoryview if big else bytes)
    else:
        assert got.anything == msg.anything
    # Decoded views and arrays over attachments share the frames' memory: no copy.
    attached = frames[1 + len(own) :]
    views = [got.view, got.arr, got.inner.arr, got.maybe, got.anything]
    for value in views:
        if isinstance(value, np.ndarray | memoryview) and value.nbytes:
            u8 = np.frombuffer(value, np.uint8) if isinstance(value, memoryview) else value
            in_frames = any(np.shares_memory(u8, as_u8(f)) for f in attached if len(f))
            assert in_frames == (value.nbytes >= SMALL.attachment_threshold)


# --------------------------------------------------------------- numpy stays optional


def test_codec_does_not_import_numpy() -> None:
    code = """
import sys
from typing import Any
from synaptic_mesh.runtime import codec
from synaptic_mesh.runtime.envelope import Envelope
from synaptic_mesh.runtime.messages import message

@message(name="nonumpy.M")
class M:
    raw: bytes
    view: memoryview
    value: Any

msg = M(b"r" * 70000, memoryview(b"v" * 70000), b"a" * 70000)
frames = codec.encode(Envelope("i", "tell", "a.b", msg))
assert len(frames) == 4, len(frames)
got = codec.decode(frames).body
assert got.raw == msg.raw and got.view == msg.view and got.value == msg.value
assert "numpy" not in sys.modules, "numpy was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------- docs


def test_attachment_example_in_docs() -> None:
    text = DOC.read_text()
    block = re.search(r"attachment-example-hex.*?```text\n(.*?)```", text, re.S)
    assert block, "attachment example block missing from docs/wire-format.md"
    doc_bytes = bytes.fromhex("".join(block.group(1).split()))
    env = Envelope(
        "n1.8",
        "tell",
        "photogrammetry.mesh",
        Scan("t3", np.zeros((100_000, 3), np.float32), b"\x89PNG"),
    )
    frames = encode(env)
    assert frames[0] == doc_bytes
    assert len(frames) == 2 and frames[1].nbytes == 1_200_000
    # The foreign-client reading shown in the docs.
    top = msgpack.unpackb(
        doc_bytes, raw=False, ext_hook=lambda c, d: ("attachment", msgpack.unpackb(d))
    )
    _, (frame, dtype, shape, order) = top[11]["points"]
    assert (frame, dtype, shape, order) == (1, "<f4", [100000, 3], "C")
    points = np.frombuffer(frames[frame], dtype).reshape(shape, order=order)
    assert points.shape == (100_000, 3)
