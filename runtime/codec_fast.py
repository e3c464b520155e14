"""The codec's fast lane: the usual message, encoded and decoded by msgspec in C.

Most messages a node sends are alike: no attachments, plain headers or
none, a small frame 0, and a body that is a plain scalar or a *flat*
``@message`` (every field a ``str``, ``int``, ``float``, ``bool`` or
``bytes``, a ``list`` of one of the first four or a ``dict`` from ``str``
to one, or one of those ``| None``). For those, :func:`encode_usual`
and :func:`decode_usual` do in one msgspec call, with its type checks in
C, what the general path of :mod:`synaptic_mesh.runtime.codec` does item
by item in Python.

Each declines (returns ``None``) whatever it does not take, before it has
changed anything, and the general path then handles it as before: it is
the one that names what is wrong with a bad frame or an unencodable body.
What the fast lane does take it turns into exactly what the general path
would make: the same bytes, the same envelope and message.
``tests/runtime/test_codec_fast.py`` holds both paths to that on generated
messages and on corrupted frames.

A flat message is built by calling its class with its fields in order,
as the general path does with keywords, so ``__post_init__`` checks run;
a class whose ``__init__`` takes anything but its fields in order is not
flat. A message's map must hold all its fields and nothing else to be
decoded here (defaults and unknown fields take the general path).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from . import attachments as _att
from .envelope import KINDS, WIRE_VERSION, Envelope, as_nodes_make_it
from .messages import is_message, lookup, name_of

if TYPE_CHECKING:
    from .codec import CodecLimits

__all__ = ["decode_usual", "encode_new", "encode_usual", "is_flat"]

_FLAT_TYPES: Final = (str, int, float, bool, bytes)
_ITEM_TYPES: Final = (str, int, float, bool)
"""What a ``list[X]`` or ``dict[str, X]`` field of a flat message may hold."""
_PLAIN: Final = frozenset({type(None), bool, int, float, str, bytes})
_REFUSED: Final = (
    msgspec.MsgspecError,
    OverflowError,
    RecursionError,
    MemoryError,
    TypeError,
    ValueError,
)

_FRAME0: Final = msgspec.msgpack.Decoder(
    tuple[  # the 13 items of docs/wire-format.md, as a node writes them
        int,  # wire version
        str,  # id
        str,  # kind
        str | None,  # sender
        str,  # subject
        str | None,  # reply_to
        str | None,  # corr
        int,  # seq
        float | None,  # deadline
        dict[str, Any] | None,  # headers: str keys here, their values checked by _plain
        str,  # type
        msgspec.Raw,  # body, decoded once its type is known
        int,  # attachments that follow
    ]
)
_ANY: Final = msgspec.msgpack.Decoder()
_ENCODER: Final = msgspec.msgpack.Encoder()
_encode = _ENCODER.encode


# ------------------------------------------------------------------ flat messages


class _Flat:
    """What the fast lane needs of one flat message class."""

    __slots__ = ("decode", "depth", "fits", "name")

    def __init__(self, cls: type, fields: list[tuple[str, Any]]) -> None:
        self.name: str = name_of(cls) or ""
        wire = msgspec.defstruct(
            f"{cls.__name__}Wire", fields, forbid_unknown_fields=True, module=__name__
        )
        unpack = msgspec.msgpack.Decoder(wire).decode
        astuple = msgspec.structs.astuple

        def decode(raw: msgspec.Raw) -> Any:
            return cls(*astuple(unpack(raw)))

        self.decode: Callable[[msgspec.Raw], Any] = decode
        self.fits: Callable[[Any], bool] = _fits_function(cls, fields)
        # the containers a message of it nests: its map, and a list or map in a field
        self.depth: int = max((_depth(hint) for _, hint in fields), default=1)


def _fits_function(cls: type, fields: list[tuple[str, Any]]) -> Callable[[Any], bool]:
    """``fits(message)``: every field holds exactly its annotated type, item
    types included (the general path would convert anything else), and each
    ``bytes`` is below every attachment threshold, so it travels inline."""
    tests = []
    for name, hint in fields:
        inner = _inner(hint)
        value = f"m.{name}"
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        if origin is list:
            test = f"type({value}) is list and set(map(type, {value})) <= _only_{args[0].__name__}"
        elif origin is dict:
            test = (
                f"type({value}) is dict and set(map(type, {value})) <= _only_str "
                f"and set(map(type, {value}.values())) <= _only_{args[1].__name__}"
            )
        else:
            test = f"type({value}) is {inner.__name__}"
            if inner is bytes:
                test += f" and len({value}) < _att.min_threshold"
        tests.append(f"({value} is None or {test})" if inner is not hint else f"({test})")
    source = "def fits(m):\n    return " + (" and ".join(tests) or "True") + "\n"
    namespace: dict[str, Any] = {"_att": _att}
    namespace.update({f"_only_{t.__name__}": frozenset({t}) for t in _ITEM_TYPES})
    exec(compile(source, f"<fits {cls.__qualname__}>", "exec"), namespace)
    return namespace["fits"]  # type: ignore[no-any-return]


def _inner(hint: Any) -> Any:
    """``X`` for ``X | None``; anything else as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return hint


def _depth(hint: Any) -> int | None:
    """The containers a field of annotation ``hint`` nests, with the message's own map
    (``CodecLimits.max_depth`` must allow it); ``None`` if the fast lane does not take it."""
    inner = _inner(hint)
    if inner in _FLAT_TYPES:
        return 1
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is list and len(args) == 1 and args[0] in _ITEM_TYPES:
        return 2
    if origin is dict and len(args) == 2 and args[0] is str and args[1] in _ITEM_TYPES:
        return 2
    return None


def _flat_fields(cls: type) -> list[tuple[str, Any]] | None:
    """The fields of ``cls`` if it is flat (see the module docstring), else ``None``."""
    try:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        params = list(inspect.signature(cls).parameters.values())
    except Exception:
        return None
    if [p.name for p in params] != [f.name for f in fields] or any(
        p.kind is not p.POSITIONAL_OR_KEYWORD for p in params
    ):
        return None  # init=False, InitVar, kw_only or a hand-written __init__
    out = []
    for f in fields:
        hint = hints.get(f.name)
        if f.name.startswith("_") or _depth(hint) is None:
            return None
        out.append((f.name, hint))
    return out


_FLATS: dict[type, _Flat | None] = {}


def _flat(cls: type) -> _Flat | None:
    """The fast lane's view of message class ``cls``, or ``None`` if it is not flat."""
    try:
        return _FLATS[cls]
    except KeyError:
        pass
    fields = _flat_fields(cls) if name_of(cls) is not None else None
    try:
        flat = _Flat(cls, fields) if fields is not None else None
    except Exception:  # a field name msgspec will not take: the general path it is
        flat = None
    _FLATS[cls] = flat
    return flat


def is_flat(cls: type) -> bool:
    """Whether messages of ``cls`` can take the fast lane."""
    return _flat(cls) is not None


# ------------------------------------------------------------------------- encode


def encode_usual(env: Envelope, limits: CodecLimits) -> bytes | None:
    """Frame 0 of ``env``, or ``None`` if it is not the usual message.

    A frame 0 over ``limits._usual`` bytes needs the general path's limit
    checks. Sets ``env.type`` as the general path does.
    """
    body = env.body
    wire_type = _wire_type(body, limits.max_depth)
    if wire_type is None:
        return None
    headers = env.headers
    if not (
        (env.type == wire_type or not env.type)
        and as_nodes_make_it(env)
        and (headers is None or (type(headers) is dict and _plain(headers, limits.max_depth)))
        and not env.attachments
    ):
        return None
    frame0 = _frame0(
        env.id,
        env.kind,
        env.sender,
        env.subject,
        env.reply_to,
        env.corr,
        env.seq,
        env.deadline,
        headers,
        wire_type,
        body,
        limits._usual,
    )
    if frame0 is not None and wire_type:
        env.type = wire_type
    return frame0


def encode_new(
    id_: str,
    kind: str,
    subject: str,
    body: Any,
    sender: str | None,
    reply_to: str | None,
    corr: str | None,
    seq: int,
    deadline: float | None,
    limits: CodecLimits,
) -> bytes | None:
    """:func:`encode_usual` of the envelope a node is making, without making it.

    ``id_``, ``kind``, ``seq`` (a counter), ``reply_to`` and ``corr`` (the
    node's own, or those of the ask being answered) and ``deadline`` (now
    plus a timeout) are right by construction; the caller's ``subject``,
    ``sender`` and ``body`` are checked here.
    """
    wire_type = _wire_type(body, limits.max_depth)
    if (
        wire_type is None
        or type(subject) is not str
        or not subject
        or (sender is not None and type(sender) is not str)
        or (deadline is not None and type(deadline) is not float)
    ):
        return None
    return _frame0(
        id_,
        kind,
        sender,
        subject,
        reply_to,
        corr,
        seq,
        deadline,
        None,
        wire_type,
        body,
        limits._usual,
    )


def _wire_type(body: Any, max_depth: int) -> str | None:
    """The wire type of a body the fast lane takes (``""`` for a plain scalar), else ``None``."""
    cls = type(body)
    if cls in _PLAIN:
        return ""
    flat = _FLATS.get(cls)
    if flat is None:
        if cls in _FLATS or not is_message(body):
            return None
        flat = _flat(cls)
        if flat is None:
            return None
    return flat.name if flat.depth <= max_depth and flat.fits(body) else None


def _plain(value: dict[str, Any], budget: int) -> bool:
    """Whether the map ``value`` holds nothing but str keys and plain values (of the
    exact built-in types), nested within ``budget`` containers: the headers both paths
    write alike, and those the general path would accept on reading."""
    stack: list[tuple[Any, int]] = [(value, budget)]
    while stack:
        item, left = stack.pop()
        if left <= 0:
            return False
        if type(item) is dict:
            for key in item:
                if type(key) is not str:
                    return False
            children: Any = item.values()
        else:
            children = item
        for child in children:
            t = type(child)
            if t is dict or t is list:
                stack.append((child, left - 1))
            elif t not in _PLAIN:
                return False
    return True


def _frame0(
    id_: str,
    kind: str,
    sender: str | None,
    subject: str,
    reply_to: str | None,
    corr: str | None,
    seq: int,
    deadline: float | None,
    headers: dict[str, Any] | None,
    wire_type: str,
    body: Any,
    small: int,
) -> bytes | None:
    try:
        frame0 = _encode(
            (
                WIRE_VERSION,
                id_,
                kind,
                sender,
                subject,
                reply_to,
                corr,
                seq,
                deadline,
                headers,
                wire_type,
                body,
                0,
            )
        )
    except _REFUSED:  # an int out of msgpack's range: the general path says so
        return None
    return frame0 if len(frame0) <= small else None


# ------------------------------------------------------------------------- decode


def decode_usual(frame0: Any, limits: CodecLimits) -> Envelope | None:
    """The envelope in ``frame0`` (the message's only frame), or ``None`` if
    it is not the usual message (or is over ``limits._usual`` bytes)."""
    small = limits._usual
    t = type(frame0)
    if t is memoryview:
        if frame0.nbytes > small or not frame0.c_contiguous:
            return None
    elif (t is not bytes and t is not bytearray) or len(frame0) > small:
        return None
    try:
        (
            version,
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
            raw,
            announced,
        ) = _FRAME0.decode(frame0)
    except _REFUSED:
        return None
    if version != WIRE_VERSION or announced or kind not in KINDS or not subject or seq < 0:
        return None
    if headers is not None and not _plain(headers, limits.max_depth):
        return None
    if type_:
        cls = lookup(type_)
        flat = _flat(cls) if cls is not None else None
        if flat is None or flat.depth > limits.max_depth:
            return None
        try:
            body = flat.decode(raw)
        except Exception:  # a field of the wrong type, or the class refused it: say why there
            return None
    else:
        try:
            body = _ANY.decode(raw)
        except _REFUSED:
            return None
        if type(body) not in _PLAIN:
            return None  # a container: the general path checks its keys and depth
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
    )
