"""Encode an :class:`~synaptic_mesh.runtime.envelope.Envelope` into frames and back.

Frame 0 is a msgpack array (layout in ``docs/wire-format.md``); every later
frame is one attachment, passed through without a copy: first the envelope's
own ``attachments``, then the large buffers of the message's fields
(:mod:`synaptic_mesh.runtime.attachments`), which frame 0 names by reference.
In process nothing is encoded: this module only runs when an envelope crosses
a process boundary.

Why it is built this way:

* **Never pickle, never an arbitrary class.** A frame comes from another
  process, perhaps another language, perhaps an attacker. Decoding builds
  only plain msgpack values and registered ``@message`` classes, looked up by
  wire name (:func:`synaptic_mesh.runtime.messages.lookup`), never by import
  path. msgpack ext types are refused, but for the one reserved for
  attachment references, which resolve only to buffers and read-only arrays.
* **Bounded.** Every frame-0 size, string, binary, array and map length,
  nesting depth and attachment count has a limit (:class:`CodecLimits`),
  checked before the work it guards: the frame size before unpacking, the
  declared container lengths by msgpack itself (capped by the frame's own
  length, so a five-byte header cannot announce four billion items), depth
  iteratively, never by recursion that a hostile frame could blow.
* **Strict.** Every field of the envelope and of a typed body is checked
  against its type; a bad frame raises :class:`~synaptic_mesh.runtime.errors.
  DecodeError` with a specific reason, and nothing else: the node sends the
  frame to the dead-letter subject and keeps running. The encoder applies the
  same rules, so it never produces a frame a peer must reject.
* **Explicitly compatible.** A decoder rejects wire versions it does not know,
  ignores extra trailing items of frame 0 and unknown fields of a typed body
  (a newer peer may add them, as protobuf allows), and fills fields a body
  lacks from the dataclass defaults.
* **Fast.** Each message class is compiled once into per-field converters
  (:mod:`synaptic_mesh.runtime.message_schema`); the hot path is one
  ``msgpack`` call plus a few type checks, a few microseconds per message.
  The attachment machinery runs only for a message that holds a buffer
  large enough to travel as a frame of its own, and bulk data is never
  copied into frame 0 nor out of the frames.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any, Final, NoReturn

import msgpack

from .attachments import (
    AttachmentRef,
    BadReference,
    ExtRefused,
    FrameSink,
    Resolver,
    buffer_size,
    ext_hook,
    made,
    note_threshold,
    set_resolver,
)
from .codec_fast import decode_usual, encode_usual
from .envelope import KINDS, WIRE_VERSION, Envelope, as_nodes_make_it
from .errors import DecodeError
from .message_schema import (
    FieldError,
    MessageSchema,
    check_plain_decoded,
    check_plain_encodable,
    describe,
    schema_for,
)
from .messages import is_message, lookup

__all__ = ["DEFAULT_LIMITS", "FRAME0_ITEMS", "CodecLimits", "decode", "encode"]

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB

FRAME0_ITEMS: Final = 13
"""Items of the version-1 frame-0 array; a longer array is accepted (extras ignored)."""


@dataclasses.dataclass(frozen=True, slots=True)
class CodecLimits:
    """Bounds the decoder enforces (and the encoder respects).

    ``max_frame``: bytes of frame 0 (attachments are bounded by the transport).
    ``max_str`` / ``max_bin``: bytes of one string / binary value.
    ``max_array`` / ``max_map``: items of one array / entries of one map (frame
    0 itself is an array, so ``max_array`` is at least 13).
    ``max_depth``: nesting of containers in ``body`` and in ``headers`` (a
    flat map is depth 1). ``max_attachments``: frames after frame 0.
    ``attachment_threshold``: a buffer field of at least this many bytes
    travels as a frame of its own (not a limit: a decoder accepts either).
    ``max_attachment_bytes``: bytes of all frames after frame 0 together.
    """

    max_frame: int = 16 * MiB
    max_str: int = 16 * MiB
    max_bin: int = 64 * MiB
    max_array: int = 100_000
    max_map: int = 100_000
    max_depth: int = 32
    max_attachments: int = 64
    attachment_threshold: int = 64 * KiB
    max_attachment_bytes: int = 2 * GiB
    _small: int = dataclasses.field(init=False, repr=False, compare=False, default=0)
    """Frame size up to which no limit but the frame's own length can bind."""
    _usual: int = dataclasses.field(init=False, repr=False, compare=False, default=0)
    """Frame 0 size up to which the fast lane (:mod:`.codec_fast`) may take a message."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.init and (type(value) is not int or value < 0):
                raise ValueError(f"CodecLimits.{f.name} must be a non-negative int, got {value!r}")
        if self.max_depth < 1:
            raise ValueError("CodecLimits.max_depth must be at least 1 (a flat map)")
        if self.max_array < FRAME0_ITEMS:
            raise ValueError(f"CodecLimits.max_array must be at least {FRAME0_ITEMS} (frame 0)")
        small = min(self.max_str, self.max_bin, self.max_array, 2 * self.max_map)
        object.__setattr__(self, "_small", small)
        object.__setattr__(self, "_usual", min(small, self.max_frame))
        note_threshold(self.attachment_threshold)  # buffers below every threshold skip the sink


DEFAULT_LIMITS: Final = CodecLimits()

_PLAIN_SCALARS: Final = frozenset({bool, int, float, str, bytes})

_NONE: Final = type(None)
_USUAL_TYPES: Final = frozenset(
    (int, str, str, sender, str, reply_to, corr, int, deadline, _NONE, str, body, int)
    for sender in (str, _NONE)
    for reply_to in (str, _NONE)
    for corr in (str, _NONE)
    for deadline in (float, _NONE)
    for body in (dict, list, str, bytes, int, float, bool, _NONE)
)
"""The item types of a frame 0 as nodes write it (no headers, a float deadline or none):
checked at once by ``_decode``, whose item-by-item checks run for anything else."""

_TLS = threading.local()
"""Per thread: ``packer``, a reusable msgpack.Packer (packb builds one per call),
and ``sink``, the FrameSink that is its ``default`` hook."""

_SCHEMAS: dict[type, MessageSchema] = {}  # local cache, avoids a call on the hot path


def _schema(cls: type) -> MessageSchema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = schema_for(cls)
    return schema


# --------------------------------------------------------------------- encode


def encode(env: Envelope, limits: CodecLimits = DEFAULT_LIMITS) -> list[bytes | memoryview]:
    """Frames for ``env``: frame 0 (the msgpack envelope), then its attachments.

    The wire ``type`` comes from the body: a registered ``@message`` instance
    travels as a map of its fields under its wire name, and ``env.type`` is
    set to that name (so ``decode(encode(env)) == env``); anything else must
    be a plain msgpack value and travels with type ``""``. A non-empty
    ``env.type`` that disagrees with the body is refused (``ValueError``).
    Attachments are passed through as they are, not copied: first
    ``env.attachments``, then each buffer field of the body of at least
    ``limits.attachment_threshold`` bytes, in field order (frame 0 holds a
    reference in its place). ``env.attachments`` itself is not changed.

    Raises ``TypeError`` for a value the wire cannot carry (an arbitrary
    object, a field of the wrong type, a non-str map key) and ``ValueError``
    for a limit exceeded or a malformed envelope field.

    The usual message takes the fast lane (:mod:`.codec_fast`); everything
    else, and every error, the general path (:func:`encode_general`).
    """
    frame0 = encode_usual(env, limits)
    if frame0 is not None:
        return [frame0]
    return encode_general(env, limits)


def encode_general(env: Envelope, limits: CodecLimits = DEFAULT_LIMITS) -> list[bytes | memoryview]:
    """:func:`encode` for any envelope, item by item: what the fast lane must match."""
    body = env.body
    cls = type(body)
    schema = _SCHEMAS.get(cls)
    if schema is None and is_message(body):
        schema = _schema(cls)
    buffers = False
    try:
        if schema is not None:
            if env.type and env.type != schema.name:
                raise ValueError(
                    f"envelope type {env.type!r} does not match its body, a {schema.qualname} "
                    f"(message type {schema.name!r})"
                )
            wire_type = env.type = schema.name  # the envelope now names its body's type
            if schema.buffers:  # it can hold a buffer: did it make one to place as a frame?
                pendings = made.count
                wire_body: Any = schema.encode_fields(body, limits.max_depth)
                buffers = pendings != made.count
            else:
                wire_body = schema.encode_fields(body, limits.max_depth)
        else:
            if env.type:
                raise TypeError(
                    f"envelope type {env.type!r} needs a body of that @message class, "
                    f"got {describe(body)}"
                )
            wire_type = ""
            wire_body = body
            if body is not None and type(body) not in _PLAIN_SCALARS:
                check_plain_encodable(body, limits.max_depth)
    except FieldError as exc:
        _raise_encode(exc, "body" if schema is None else schema.qualname)
    _check_envelope(env, limits)
    try:
        packer = _TLS.packer
    except AttributeError:
        packer = _new_packer()
    if buffers:
        return _encode_buffers(env, wire_type, wire_body, limits, packer)
    attachments = env.attachments
    n_attachments = len(attachments)
    if n_attachments:
        _check_attachments(attachments, None, limits)
    frame0 = _pack_frame0(packer, env, wire_type, wire_body, n_attachments)
    size = len(frame0)
    if size > limits._small or size > limits.max_frame:
        _check_frame0(frame0, limits)
    if not n_attachments:
        return [frame0]
    return [frame0, *attachments]


def _pack_frame0(
    packer: msgpack.Packer, env: Envelope, wire_type: str, wire_body: Any, n_attachments: int
) -> bytes:
    """Frame 0: the envelope as the documented 13-item array."""
    try:
        return packer.pack(
            [
                WIRE_VERSION,
                env.id,
                env.kind,
                env.sender,
                env.subject,
                env.reply_to,
                env.corr,
                env.seq,
                env.deadline,
                env.headers,
                wire_type,
                wire_body,
                n_attachments,
            ]
        )
    except OverflowError as exc:
        raise ValueError(
            f"cannot encode envelope: an integer is out of msgpack range ({exc})"
        ) from None


def _encode_buffers(
    env: Envelope, wire_type: str, wire_body: Any, limits: CodecLimits, packer: msgpack.Packer
) -> list[bytes | memoryview]:
    """The end of :func:`encode` for a body that may hold :class:`Pending`
    buffers: the packer's sink places them while frame 0 is packed."""
    attachments = env.attachments
    n_attachments = len(attachments)
    sink: FrameSink = _TLS.sink
    sink.threshold = limits.attachment_threshold
    sink.base = 1 + n_attachments
    if sink.frames:  # left over by a pack that raised
        sink.frames = []
    try:
        frame0 = _pack_frame0(packer, env, wire_type, wire_body, n_attachments)
    finally:
        extra = sink.frames
        sink.frames = []  # never keep the buffers alive until the next message
    if extra:
        # n_attachments is the last item of frame 0: write the full count instead.
        n_own = n_attachments
        n_attachments += len(extra)
        frame0 = frame0[: -len(msgpack.packb(n_own))] + msgpack.packb(n_attachments)
    if n_attachments:
        _check_attachments(attachments, extra, limits)
    size = len(frame0)
    if size > limits._small or size > limits.max_frame:
        _check_frame0(frame0, limits)
    if not n_attachments:
        return [frame0]
    return [frame0, *attachments, *extra]


def _check_frame0(frame0: bytes, limits: CodecLimits) -> None:
    size = len(frame0)
    if size > limits.max_frame:
        raise ValueError(f"frame 0 is {size} bytes, over the limit of {limits.max_frame}")
    if size > limits._small:
        # Only a frame this large can hold a string or container over a limit.
        try:
            try:
                _unpack(frame0, limits, size)
            except _HasExt:
                _unpack_ext(frame0, limits, size)
        except DecodeError as exc:
            raise ValueError(f"envelope exceeds a codec limit: {exc.reason}") from None


def _new_packer() -> msgpack.Packer:
    sink = _TLS.sink = FrameSink()
    packer = _TLS.packer = msgpack.Packer(use_bin_type=True, default=sink.default)
    return packer


def _check_attachments(
    attachments: Sequence[Any], extra: list[Any] | None, limits: CodecLimits
) -> None:
    count = len(attachments) + (len(extra) if extra else 0)
    if count > limits.max_attachments:
        raise ValueError(
            f"{count} attachments, over the limit of {limits.max_attachments}"
            + (f" ({len(extra)} of them buffers of the body)" if extra else "")
        )
    total = 0
    for i, frame in enumerate([*attachments, *(extra or ())], 1):
        try:
            total += buffer_size(frame)
        except TypeError:
            raise TypeError(
                f"attachment {i} must be a buffer (bytes, bytearray, memoryview), "
                f"got {describe(frame)}"
            ) from None
    if total > limits.max_attachment_bytes:
        raise ValueError(
            f"attachments total {total} bytes, over the limit of {limits.max_attachment_bytes}"
        )


def _raise_encode(exc: FieldError, owner: str) -> NoReturn:
    where = exc.where
    text = f"field {where!r} of {owner}: {exc.detail}" if where else f"{owner}: {exc.detail}"
    if exc.limit:
        raise ValueError(f"cannot encode {text}") from None
    raise TypeError(f"cannot encode {text}") from None


def _check_envelope(env: Envelope, limits: CodecLimits) -> None:
    if env.headers is None and as_nodes_make_it(env):  # else check each field, to say why
        return
    if not isinstance(env.id, str):
        raise TypeError(f"envelope id must be str, got {describe(env.id)}")
    if env.kind not in KINDS:
        raise ValueError(f"unknown kind {env.kind!r}; expected one of {sorted(KINDS)}")
    if not isinstance(env.subject, str) or not env.subject:
        raise ValueError(f"envelope subject must be a non-empty str, got {env.subject!r}")
    for name in ("sender", "reply_to", "corr"):
        value = getattr(env, name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"envelope {name} must be str or None, got {describe(value)}")
    seq = env.seq
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError(f"envelope seq must be a non-negative int, got {seq!r}")
    deadline = env.deadline
    if deadline is not None and (
        not isinstance(deadline, int | float) or isinstance(deadline, bool)
    ):
        raise TypeError(f"envelope deadline must be float or None, got {describe(deadline)}")
    headers = env.headers
    if headers is not None:
        if not isinstance(headers, dict):
            raise TypeError(f"envelope headers must be a dict or None, got {describe(headers)}")
        try:
            check_plain_encodable(headers, limits.max_depth)
        except FieldError as exc:
            _raise_encode(exc, "headers")


# --------------------------------------------------------------------- decode


_REF_OVERHEAD: Final = 1024
"""Bytes an array reference adds to its inline data (dtype, shape, order)."""

_DECODED_SCALARS: Final = frozenset({type(None), bool, int, float, str, bytes})


class _HasExt(Exception):
    """Frame 0 holds an ext value: unpack it again with :func:`_unpack_ext`."""


def _unpack(frame: Any, limits: CodecLimits, size: int, max_ext: int = 0) -> Any:
    """Unpack frame 0 within ``limits``; every failure becomes a DecodeError.

    With ``max_ext`` 0 (the first attempt, and the whole story for a frame
    without attachment references) every ext value longer than zero bytes
    raises :class:`_HasExt`, so what comes back holds only plain values.
    """
    # No string or container can be longer than the frame itself: capping the
    # limits by the size stops a tiny frame from announcing a huge allocation
    # (msgpack preallocates a list for the declared length). For a frame no
    # larger than limits._small, the size is the tighter bound of them all.
    if size <= limits._small:
        max_str = max_bin = max_array = size
        max_map = size >> 1
    else:
        max_str = min(limits.max_str, size)
        max_bin = min(limits.max_bin, size)
        max_array = min(limits.max_array, size)
        max_map = min(limits.max_map, size >> 1)
    try:
        return msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_str,
            max_bin_len=max_bin,
            max_array_len=max_array,
            max_map_len=max_map,
            max_ext_len=max_ext,
            ext_hook=ext_hook,
        )
    except msgpack.ExtraData:
        raise DecodeError("frame 0 has trailing bytes after the envelope") from None
    except msgpack.StackError:
        raise DecodeError("frame 0 nests deeper than msgpack's stack allows") from None
    except msgpack.FormatError:
        raise DecodeError("frame 0 is not valid msgpack (reserved byte 0xc1)") from None
    except ExtRefused as exc:
        raise DecodeError(
            f"frame 0 uses msgpack ext type {exc.args[0]}; ext types are refused "
            "(but for attachment references)"
        ) from None
    except BadReference as exc:
        raise DecodeError(f"frame 0 holds a malformed attachment reference: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"frame 0 holds a str that is not valid UTF-8: {exc.reason}") from None
    except ValueError as exc:
        text = str(exc)
        if "incomplete input" in text:
            raise DecodeError("frame 0 is truncated (incomplete msgpack)") from None
        if "max_ext_len" in text:
            if not max_ext:
                raise _HasExt from None
            raise DecodeError(f"frame 0 holds an ext value over the size limit: {text}") from None
        if "timestamp" in text.lower():
            raise DecodeError("frame 0 uses a msgpack ext type; ext types are refused") from None
        if "map key" in text:
            raise DecodeError(f"frame 0 has a map key that is not str: {text}") from None
        if "exceeds max_" in text:
            raise DecodeError(f"frame 0 exceeds a size limit: {text}") from None
        raise DecodeError(f"frame 0 is not valid msgpack: {text}") from None
    except Exception as exc:  # MemoryError, BufferError, anything unforeseen
        raise DecodeError(f"frame 0 cannot be unpacked: {exc!r}") from None


def _unpack_ext(frame: Any, limits: CodecLimits, size: int) -> tuple[Any, int]:
    """Unpack a frame 0 that holds ext values; also returns its reference count.

    Attachment references become :class:`AttachmentRef` objects; msgpack
    decodes the timestamp ext (-1) itself, without the hook, so the walk here
    refuses it. References are counted so that the decoder can check that
    each was resolved by a buffer field (none hides in a plain value).
    """
    top = _unpack(frame, limits, size, min(limits.max_bin + _REF_OVERHEAD, size))
    refs = 0
    stack: list[Any] = [[top]]
    while stack:
        item = stack.pop()
        for child in item.values() if type(item) is dict else item:
            t = type(child)
            if t is list or t is dict:
                stack.append(child)
            elif t is AttachmentRef:
                refs += 1
            elif t not in _DECODED_SCALARS:
                raise DecodeError(
                    f"frame 0 holds a msgpack {describe(child)} (ext type -1); "
                    "ext types other than attachment references are refused"
                )
    return top, refs


def _bad(field: str, expected: str, value: object) -> NoReturn:
    raise DecodeError(f"envelope field {field!r}: expected {expected}, got {describe(value)}")


def decode(
    frames: Sequence[bytes | bytearray | memoryview], limits: CodecLimits = DEFAULT_LIMITS
) -> Envelope:
    """The envelope carried by ``frames`` (frame 0 plus attachments).

    Raises :class:`DecodeError` with a specific reason for every malformed
    input, and no other exception. Attachment references in the body resolve
    to their frames without a copy (a read-only memoryview or ndarray over the
    frame; ``bytes`` fields get the frame itself if it is ``bytes``, else a
    copy); the frames no reference names become ``env.attachments``, as a tuple
    of the same buffer objects, not copies.

    The usual message takes the fast lane (:mod:`.codec_fast`); everything
    else the general path (:func:`decode_general`).
    """
    t = type(frames)
    if (t is tuple or t is list) and len(frames) == 1:  # as links hand them over
        try:
            env = decode_usual(frames[0], limits)
        except Exception:  # it declines rather than raises; should it raise, the general
            env = None  # path, the one that reports errors, decides
        if env is not None:
            return env
    return decode_general(frames, limits)


def decode_general(
    frames: Sequence[bytes | bytearray | memoryview], limits: CodecLimits = DEFAULT_LIMITS
) -> Envelope:
    """:func:`decode` without the fast lane: what the fast lane must match."""
    try:
        return _decode(frames, limits)
    except DecodeError:
        raise
    except Exception as exc:  # a safety net: nothing but DecodeError may escape
        raise DecodeError(f"frames cannot be decoded: {exc!r}") from None


def _decode(frames: Sequence[bytes | bytearray | memoryview], limits: CodecLimits) -> Envelope:
    try:
        n_frames = len(frames)
        frame0 = frames[0] if n_frames else None
    except Exception:
        raise DecodeError(f"frames must be a sequence of buffers, got {describe(frames)}") from None
    if not n_frames:
        raise DecodeError(
            "no frames (an empty frame sequence is the 'no responders' status, not an envelope)"
        )
    if n_frames > 1 + limits.max_attachments:
        raise DecodeError(
            f"too many frames: {n_frames}, at most {1 + limits.max_attachments} "
            f"(frame 0 and {limits.max_attachments} attachments)"
        )
    t = type(frame0)
    if t is bytes or t is bytearray:
        size = len(frame0)
    elif t is memoryview:
        size = frame0.nbytes
    else:
        raise DecodeError(f"frame 0 must be bytes, bytearray or memoryview, got {describe(frame0)}")
    if not size:
        raise DecodeError("frame 0 is empty")
    if size > limits.max_frame:
        raise DecodeError(f"frame 0 is {size} bytes, over the limit of {limits.max_frame}")
    if n_frames > 1:
        _check_frames(frames, limits)

    try:
        top = _unpack(frame0, limits, size)
        refs = 0
    except _HasExt:
        top, refs = _unpack_ext(frame0, limits, size)
    if not (  # the usual envelope: one check of all the types, then the values
        type(top) is list
        and len(top) == FRAME0_ITEMS
        and tuple(map(type, top)) in _USUAL_TYPES
        and top[0] == WIRE_VERSION
        and top[2] in KINDS
        and top[4]
        and top[7] >= 0
        and top[12] == n_frames - 1
    ):
        top = _checked_items(top, n_frames, limits)  # says what is wrong, or normalizes
    (
        _,
        id_,
        kind,
        sender,
        subject,
        reply_to,
        corr,
        seq,
        deadline,
        headers,
        type_,
        body,
        _announced,  # checked: the frames that follow
    ) = top
    own = tuple(frames[1:]) if n_frames > 1 else ()
    if type_:
        if refs:
            body, own = _decode_with_refs(type_, body, limits, frames, refs)
        else:
            body = _decode_typed(type_, body, limits)
    else:
        if refs:
            raise DecodeError(
                f"frame 0 holds {refs} attachment reference(s) but no typed message: "
                "references stand only in buffer fields of a @message"
            )
        try:
            check_plain_decoded(body, limits.max_depth)
        except FieldError as exc:
            raise DecodeError(f"envelope field 'body'{_at(exc)}: {exc.detail}") from None

    return Envelope(
        id_,
        kind,
        subject,
        body,
        type=type_,
        sender=sender,
        reply_to=reply_to,
        corr=corr,
        seq=seq,
        deadline=deadline,
        headers=headers,
        attachments=own,
    )


def _checked_items(top: Any, n_frames: int, limits: CodecLimits) -> list[Any]:
    """The 13 items of frame 0, each checked (``DecodeError`` says which is wrong), the
    deadline as a float: what :func:`_decode` does with an envelope that is not the usual."""
    if type(top) is not list:
        raise DecodeError(f"frame 0 must be a msgpack array, got {describe(top)}")
    if not top:
        raise DecodeError("frame 0 is an empty array; its first item must be the wire version")
    version = top[0]
    if type(version) is not int or version != WIRE_VERSION:
        raise DecodeError(f"unsupported wire version {version!r} (this node speaks {WIRE_VERSION})")
    if len(top) < FRAME0_ITEMS:
        raise DecodeError(
            f"frame 0 has {len(top)} items, wire version {WIRE_VERSION} needs {FRAME0_ITEMS}"
        )
    # Items past the 13th are ignored: a later minor revision may append fields.
    items = top[:FRAME0_ITEMS]  # a copy, which gets the normalized deadline
    (
        _,
        id_,
        kind,
        sender,
        subject,
        reply_to,
        corr,
        seq,
        deadline,
        headers,
        type_,
        _body,  # checked by _decode with its type
        n_attachments,
    ) = items

    if type(id_) is not str:
        _bad("id", "str", id_)
    if type(kind) is not str:
        _bad("kind", "str", kind)
    if kind not in KINDS:
        raise DecodeError(f"unknown kind {kind!r}; expected one of {', '.join(sorted(KINDS))}")
    if sender is not None and type(sender) is not str:
        _bad("sender", "str or nil", sender)
    if type(subject) is not str:
        _bad("subject", "str", subject)
    if not subject:
        raise DecodeError("envelope field 'subject': must not be empty")
    if reply_to is not None and type(reply_to) is not str:
        _bad("reply_to", "str or nil", reply_to)
    if corr is not None and type(corr) is not str:
        _bad("corr", "str or nil", corr)
    if type(seq) is not int:
        _bad("seq", "int", seq)
    if seq < 0:
        raise DecodeError(f"envelope field 'seq': must be non-negative, got {seq}")
    if deadline is not None:
        td = type(deadline)
        if td is int:
            deadline = float(deadline)
        elif td is not float:
            _bad("deadline", "float or nil", deadline)
    if headers is not None:
        if type(headers) is not dict:
            _bad("headers", "map or nil", headers)
        try:
            check_plain_decoded(headers, limits.max_depth)
        except FieldError as exc:
            raise DecodeError(f"envelope field 'headers'{_at(exc)}: {exc.detail}") from None
    if type(type_) is not str:
        _bad("type", "str", type_)
    if type(n_attachments) is not int:
        _bad("n_attachments", "int", n_attachments)
    if n_attachments != n_frames - 1:
        raise DecodeError(
            f"envelope announces {n_attachments} attachments but {n_frames - 1} frames follow"
        )

    items[8] = deadline
    return items


def _check_frames(frames: Sequence[Any], limits: CodecLimits) -> None:
    """Every frame after frame 0 is a buffer, and together within the limit."""
    total = 0
    for i in range(1, len(frames)):
        frame = frames[i]
        t = type(frame)
        if t is bytes or t is bytearray:
            total += len(frame)
        elif t is memoryview:
            total += frame.nbytes
        else:
            raise DecodeError(
                f"frame {i} must be bytes, bytearray or memoryview, got {describe(frame)}"
            )
    if total > limits.max_attachment_bytes:
        raise DecodeError(
            f"attachment frames total {total} bytes, over the limit of "
            f"{limits.max_attachment_bytes}"
        )


def _at(exc: FieldError) -> str:
    where = exc.where
    return f" at {where!r}" if where else ""


def _decode_with_refs(
    type_: str, body: Any, limits: CodecLimits, frames: Sequence[Any], refs: int
) -> tuple[Any, tuple[Any, ...]]:
    """The message whose frame 0 holds ``refs`` references, and the frames
    none of them named (the envelope's own attachments)."""
    resolver = Resolver(frames)
    previous = set_resolver(resolver)
    try:
        body = _decode_typed(type_, body, limits)
    finally:
        set_resolver(previous)
    if resolver.resolved != refs:
        raise DecodeError(
            f"frame 0 holds {refs - resolver.resolved} attachment reference(s) where no "
            "buffer field takes one (in a plain value, a header, an unknown field or an "
            "item after the 13th); references stand only where the annotation is bytes, "
            "memoryview, numpy.ndarray or Any"
        )
    return body, resolver.unreferenced()


def _decode_typed(type_: str, body: Any, limits: CodecLimits) -> Any:
    cls = lookup(type_)
    if cls is None:
        raise DecodeError(f"unknown message type {type_!r}")
    schema = _SCHEMAS.get(cls)
    if schema is None:
        try:
            schema = _schema(cls)
        except TypeError as exc:
            raise DecodeError(f"message type {type_!r} cannot be decoded: {exc}") from None
    if type(body) is not dict:
        raise DecodeError(
            f"body of message type {type_!r} must be a map of its fields, got {describe(body)}"
        )
    try:
        return schema.decode_fields(body, limits.max_depth)
    except FieldError as exc:
        where = exc.where
        owner = schema.qualname
        raise DecodeError(
            f"field {where!r} of {owner}: {exc.detail}" if where else f"{owner}: {exc.detail}"
        ) from None
