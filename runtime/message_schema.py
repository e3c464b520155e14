"""Type-directed conversion between ``@message`` instances and plain msgpack values.

The codec (:mod:`synaptic_mesh.runtime.codec`) uses this module to turn a
message into a msgpack map of its fields and back. Each message class is
compiled once, on first use, into a :class:`MessageSchema`: one small
converter per field, chosen from the field's annotation (resolved with
:func:`typing.get_type_hints`, so ``from __future__ import annotations`` works).
Nothing here is reflective at call time and nothing but registered
``@message`` classes and plain values is ever constructed.

Supported annotations: ``str``, ``int``, ``float`` (an int is accepted and
becomes a float), ``bool`` (an int is not), ``bytes`` (``bytearray`` and
``memoryview`` are accepted when encoding), ``memoryview``, ``numpy.ndarray``
and ``numpy.typing.NDArray[X]``, ``None``, ``X | None``, unions of those with
at most one array type and one map type, ``list[X]``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``dict[str, X]``, nested ``@message`` classes (also
recursive ones), and ``Any`` (any plain msgpack value, or at its top level a
buffer or an ndarray). Anything else (``set``, ``datetime``, a plain class) is
refused with a ``TypeError`` when the class is first encoded or decoded,
rather than guessed at.

Buffers (``bytes``, ``memoryview``, ndarray and ``Any`` positions) of at least
``CodecLimits.attachment_threshold`` bytes become attachments: the encoding
converters leave a :class:`~synaptic_mesh.runtime.attachments.Pending` for
the codec's packer to place, and the decoding converters resolve references
with the per-thread :class:`~synaptic_mesh.runtime.attachments.Resolver`
that the codec installs when frame 0 holds any (see that module). So the
output of :meth:`MessageSchema.encode_fields` is for the codec's packer only.
Numpy is imported only when a field annotated with an ndarray type is
compiled (its annotation needs numpy anyway).

Depth is counted in containers: a message's own map is one level, a list
field inside it a second, and so on; a converter that would go past the budget
raises :class:`FieldError`, which the codec turns into its own error.
"""

from __future__ import annotations

import dataclasses
import threading
import types
import typing
from collections.abc import Callable
from typing import Any, Final

from . import attachments as _att
from .attachments import (
    AttachmentError,
    AttachmentRef,
    Pending,
    current_resolver,
    is_ndarray,
    pend_array,
    pend_raw,
)
from .messages import is_message, name_of

__all__ = [
    "FieldError",
    "MessageSchema",
    "check_plain_decoded",
    "check_plain_encodable",
    "describe",
    "schema_for",
]

Converter = Callable[[Any, int], Any]
"""``conv(value, budget) -> value``; ``budget`` is the container levels left."""

_NONE: Final = type(None)
_SCALARS: Final = frozenset({_NONE, bool, int, float, str, bytes})
_ENCODABLE_SCALARS: Final = (str, int, float, bytes, bytearray, memoryview)
_MISSING: Final = object()


class FieldError(Exception):
    """A value does not fit its annotation (or a limit); the codec rewords it.

    ``path`` holds the segments from the innermost value outwards (reversed by
    :attr:`where`); ``limit`` is true when a depth limit, not a type, failed.
    """

    def __init__(self, detail: str, path: list[str] | None = None, *, limit: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.path: list[str] = path if path is not None else []
        self.limit = limit

    @property
    def where(self) -> str:
        return "".join(reversed(self.path)).lstrip(".")


def describe(value: object) -> str:
    """Short type name of a value for error messages (``None`` for None)."""
    if value is None:
        return "None"
    if type(value) is AttachmentRef:
        return "attachment reference"
    return type(value).__name__


def _mismatch(expected: str, value: object) -> FieldError:
    return FieldError(f"expected {expected}, got {describe(value)}")


def _too_deep() -> FieldError:
    return FieldError("nests deeper than max_depth", limit=True)


def _from_attachment(exc: AttachmentError) -> FieldError:
    return FieldError(exc.detail, limit=exc.limit)


def check_plain_decoded(value: Any, budget: int) -> None:
    """Check a value unpacked by msgpack: str map keys, depth within ``budget``.

    Iterative, so a hostile nesting cannot exhaust the Python stack; the
    scalars are plain (the codec has checked any frame 0 with ext values).
    """
    t = type(value)
    if t is not list and t is not dict:
        return
    stack: list[tuple[Any, int]] = [(value, budget)]
    while stack:
        item, left = stack.pop()
        if left <= 0:
            raise _too_deep()
        if type(item) is dict:
            for key in item:
                if type(key) is not str:
                    raise FieldError(f"map keys must be str, got {describe(key)}")
            children: Any = item.values()
        else:
            children = item
        for child in children:
            tc = type(child)
            if tc is list or tc is dict:
                stack.append((child, left - 1))


def check_plain_encodable(value: Any, budget: int) -> None:
    """Check that ``value`` is a plain msgpack value: None, bool, int, float,
    str, bytes-like, list/tuple, dict with str keys; depth within ``budget``.
    Raises :class:`FieldError` (``limit`` set for depth)."""
    stack: list[tuple[Any, int]] = [(value, budget)]
    while stack:
        item, left = stack.pop()
        if item is None or isinstance(item, _ENCODABLE_SCALARS):
            continue
        if isinstance(item, dict):
            if left <= 0:
                raise _too_deep()
            for key, child in item.items():
                if type(key) is not str and not isinstance(key, str):
                    raise FieldError(f"map keys must be str, got {describe(key)}")
                if type(child) not in _SCALARS:  # exact plain scalars need no visit
                    stack.append((child, left - 1))
        elif isinstance(item, list | tuple):
            if left <= 0:
                raise _too_deep()
            for child in item:
                if type(child) not in _SCALARS:
                    stack.append((child, left - 1))
        elif is_message(item):
            raise FieldError(
                f"a @message instance ({type(item).__qualname__}) inside a plain value "
                "cannot be decoded as such; declare it in a message field's annotation"
            )
        elif is_ndarray(item):
            raise FieldError(
                "a numpy.ndarray is not a plain msgpack value; it travels in a @message "
                "field annotated numpy.ndarray, NDArray[...] or Any (at its top level)"
            )
        else:
            raise FieldError(
                f"{type(item).__module__}.{type(item).__qualname__} is not a plain msgpack "
                "value (None, bool, int, float, str, bytes, list, tuple, dict with str keys)"
            )


@dataclasses.dataclass(slots=True)
class _Kind:
    """A compiled annotation.

    Values whose exact type is in ``exact`` pass unchanged when decoding, and
    those in ``exact_enc`` (by default the same) when encoding; any other
    value goes through ``dec`` (decoding) or ``enc`` (encoding). ``bytes``
    differs: decoded bin passes unchanged, but an encoded bytes value must go
    through ``enc``, which decides inline or attachment by its size.
    ``shape`` is "scalar", "array", "map", "any" or "union" (used to build
    unions, which must stay unambiguous). ``buffers``: a buffer may stand
    here, not counting nested messages, which ``schemas`` lists (the
    message's :attr:`MessageSchema.buffers` follows them). ``takes``: which
    attachment reference the converter resolves, "raw" or "array" (unions
    pick their member by it).
    """

    text: str
    exact: frozenset[type]
    dec: Converter
    enc: Converter
    shape: str
    exact_enc: frozenset[type] | None = None
    buffers: bool = False
    schemas: tuple[MessageSchema, ...] = ()
    takes: str = ""

    def __post_init__(self) -> None:
        if self.exact_enc is None:
            self.exact_enc = self.exact


def _scalar(tp: type) -> _Kind:
    name = "None" if tp is _NONE else tp.__name__

    def dec(v: Any, budget: int) -> Any:
        raise _mismatch(name, v)

    enc = dec
    if tp is int:

        def enc(v: Any, budget: int) -> Any:
            if isinstance(v, int) and not isinstance(v, bool):
                return int(v)
            raise _mismatch("int", v)

    elif tp is float:

        def dec(v: Any, budget: int) -> Any:
            if type(v) is int:
                return float(v)
            raise _mismatch("float", v)

        def enc(v: Any, budget: int) -> Any:
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
            raise _mismatch("float", v)

    elif tp is str:

        def enc(v: Any, budget: int) -> Any:
            if isinstance(v, str):
                return str(v)
            raise _mismatch("str", v)

    elif tp is bytes:

        def dec(v: Any, budget: int) -> Any:
            if type(v) is AttachmentRef:
                try:
                    return current_resolver().raw_bytes(v)
                except AttachmentError as exc:
                    raise _from_attachment(exc) from None
            raise _mismatch("bytes", v)

        return _Kind(
            name,
            frozenset({bytes}),
            dec,
            _buffer_enc("bytes"),
            "scalar",
            exact_enc=frozenset(),  # every bytes value is measured against the threshold
            buffers=True,
            takes="raw",
        )

    return _Kind(name, frozenset({tp}), dec, enc, "scalar")


def _buffer_enc(text: str) -> Converter:
    def enc(v: Any, budget: int) -> Any:
        if type(v) is bytes:  # the common case, inline: one comparison
            return v if len(v) < _att.min_threshold else Pending(v, False)
        if isinstance(v, bytes | bytearray | memoryview):
            return pend_raw(v)
        raise _mismatch(text, v)

    return enc


def _memoryview() -> _Kind:
    """``memoryview``: decodes to a read-only view over the attachment frame
    (no copy) or over the inline bin."""

    def dec(v: Any, budget: int) -> Any:
        if type(v) is bytes:
            return memoryview(v)  # read-only, like every view this kind returns
        if type(v) is AttachmentRef:
            try:
                return current_resolver().raw_view(v)
            except AttachmentError as exc:
                raise _from_attachment(exc) from None
        raise _mismatch("memoryview", v)

    return _Kind(
        "memoryview",
        frozenset(),
        dec,
        _buffer_enc("memoryview"),
        "scalar",
        buffers=True,
        takes="raw",
    )


def _is_ndarray_class(tp: Any) -> bool:
    # By name: the codec must not import numpy to compile other annotations.
    return isinstance(tp, type) and tp.__module__ == "numpy" and tp.__qualname__ == "ndarray"


def _ndarray(args: tuple[Any, ...]) -> _Kind:
    """``numpy.ndarray`` or ``NDArray[X]``: always an array reference, its data
    in a frame at or above the threshold, inline below; decodes to a read-only
    array over the frame (no copy). ``NDArray[np.float32]`` requires that
    scalar type (any byte order); an abstract one (``np.floating``) its family.
    """
    import numpy as np  # the annotation names numpy: it is installed

    scalar: type | None = None
    if len(args) == 2 and typing.get_origin(args[1]) is np.dtype:
        (arg,) = typing.get_args(args[1]) or (Any,)
        if isinstance(arg, type) and issubclass(arg, np.generic):
            scalar = arg
    text = "ndarray" if scalar is None else f"NDArray[{scalar.__name__}]"

    def dec(v: Any, budget: int) -> Any:
        if type(v) is AttachmentRef:
            try:
                return current_resolver().array(v, scalar)
            except AttachmentError as exc:
                raise _from_attachment(exc) from None
        raise _mismatch(text, v)

    def enc(v: Any, budget: int) -> Any:
        if is_ndarray(v):
            try:
                return pend_array(v, scalar)
            except AttachmentError as exc:
                raise _from_attachment(exc) from None
        raise _mismatch(text, v)

    return _Kind(text, frozenset(), dec, enc, "scalar", buffers=True, takes="array")


def _any() -> _Kind:
    def dec(v: Any, budget: int) -> Any:
        if type(v) is AttachmentRef:
            try:
                return current_resolver().any(v)
            except AttachmentError as exc:
                raise _from_attachment(exc) from None
        check_plain_decoded(v, budget)
        return v

    def enc(v: Any, budget: int) -> Any:
        t = type(v)
        if t is bytes or t is bytearray or t is memoryview:
            return pend_raw(v)
        if is_ndarray(v):
            try:
                return pend_array(v)
            except AttachmentError as exc:
                raise _from_attachment(exc) from None
        check_plain_encodable(v, budget)
        return v

    return _Kind(
        "Any", _SCALARS, dec, enc, "any", exact_enc=_SCALARS - {bytes}, buffers=True, takes="any"
    )


def _sequence(item: _Kind, *, as_tuple: bool) -> _Kind:
    text = f"tuple[{item.text}, ...]" if as_tuple else f"list[{item.text}]"
    exact, exact_enc, idec, ienc = item.exact, item.exact_enc, item.dec, item.enc

    def dec(v: Any, budget: int) -> Any:
        if type(v) is not list:
            raise _mismatch(text, v)
        if budget <= 0:
            raise _too_deep()
        left = budget - 1
        out = []
        append = out.append
        for i, x in enumerate(v):
            if type(x) in exact:
                append(x)
                continue
            try:
                append(idec(x, left))
            except FieldError as exc:
                exc.path.append(f"[{i}]")
                raise
        return tuple(out) if as_tuple else out

    def enc(v: Any, budget: int) -> Any:
        if not isinstance(v, list | tuple):
            raise _mismatch(text, v)
        if budget <= 0:
            raise _too_deep()
        left = budget - 1
        out = []
        for i, x in enumerate(v):
            if type(x) in exact_enc:  # type: ignore[operator]
                out.append(x)
                continue
            try:
                out.append(ienc(x, left))
            except FieldError as exc:
                exc.path.append(f"[{i}]")
                raise
        return out

    return _Kind(text, frozenset(), dec, enc, "array", buffers=item.buffers, schemas=item.schemas)


def _fixed_tuple(items: list[_Kind]) -> _Kind:
    text = f"tuple[{', '.join(k.text for k in items)}]"
    count = len(items)

    def convert(v: Any, budget: int, encoding: bool) -> Any:
        ok = isinstance(v, list | tuple) if encoding else type(v) is list
        if not ok or len(v) != count:
            got = f"{describe(v)} of {len(v)} items" if ok else describe(v)
            raise FieldError(f"expected {text}, got {got}")
        if budget <= 0:
            raise _too_deep()
        out = []
        for i, (kind, x) in enumerate(zip(items, v, strict=True)):
            if type(x) in (kind.exact_enc if encoding else kind.exact):  # type: ignore[operator]
                out.append(x)
                continue
            try:
                out.append((kind.enc if encoding else kind.dec)(x, budget - 1))
            except FieldError as exc:
                exc.path.append(f"[{i}]")
                raise
        return out if encoding else tuple(out)

    return _Kind(
        text,
        frozenset(),
        lambda v, b: convert(v, b, False),
        lambda v, b: convert(v, b, True),
        "array",
        buffers=any(k.buffers for k in items),
        schemas=tuple(s for k in items for s in k.schemas),
    )


def _dict(value: _Kind) -> _Kind:
    text = f"dict[str, {value.text}]"
    vdec, venc = value.dec, value.enc

    def convert(v: Any, budget: int, encoding: bool) -> Any:
        if not (isinstance(v, dict) if encoding else type(v) is dict):
            raise _mismatch(text, v)
        if budget <= 0:
            raise _too_deep()
        conv = venc if encoding else vdec
        exact = value.exact_enc if encoding else value.exact
        out = {}
        for key, x in v.items():
            if not isinstance(key, str):
                raise FieldError(f"map keys must be str, got {describe(key)}")
            if type(x) in exact:  # type: ignore[operator]
                out[key] = x
                continue
            try:
                out[key] = conv(x, budget - 1)
            except FieldError as exc:
                exc.path.append(f"[{key!r}]")
                raise
        return out

    return _Kind(
        text,
        frozenset(),
        lambda v, b: convert(v, b, False),
        lambda v, b: convert(v, b, True),
        "map",
        buffers=value.buffers,
        schemas=value.schemas,
    )


def _nested(cls: type) -> _Kind:
    schema = schema_for(cls)  # may be still compiling (a recursive type): fine

    def dec(v: Any, budget: int) -> Any:
        if type(v) is not dict:
            raise _mismatch(cls.__qualname__, v)
        return schema.decode_fields(v, budget)

    def enc(v: Any, budget: int) -> Any:
        if not isinstance(v, cls):
            raise _mismatch(cls.__qualname__, v)
        return schema.encode_fields(v, budget)

    return _Kind(cls.__qualname__, frozenset(), dec, enc, "map", schemas=(schema,))


def _union(members: list[_Kind]) -> _Kind:
    text = " | ".join(k.text for k in members)
    if any(k.shape == "any" for k in members):
        return _any()
    for shape in ("array", "map"):
        if sum(k.shape == shape for k in members) > 1:
            raise TypeError(f"union {text} is ambiguous: it has two {shape} types")
    array = next((k for k in members if k.shape == "array"), None)
    mapping = next((k for k in members if k.shape == "map"), None)
    scalars = [k for k in members if k.shape == "scalar"]
    exact = frozenset().union(*(k.exact for k in scalars))
    exact_enc = frozenset().union(*(k.exact_enc for k in scalars))  # type: ignore[arg-type]

    def dec(v: Any, budget: int) -> Any:
        t = type(v)
        target = array if t is list else mapping if t is dict else None
        if target is not None:
            return target.dec(v, budget)
        if t is AttachmentRef:
            # The reference says which member: its own error is the useful one.
            takes = "raw" if v.dtype is None else "array"
            for k in scalars:
                if k.takes == takes:
                    return k.dec(v, budget)
            raise _mismatch(text, v)
        for k in scalars:
            try:
                return k.dec(v, budget)
            except FieldError:
                pass
        raise _mismatch(text, v)

    def enc(v: Any, budget: int) -> Any:
        if isinstance(v, list | tuple):
            target = array
        elif isinstance(v, dict) or is_message(v):
            target = mapping
        else:
            target = None
        if target is not None:
            return target.enc(v, budget)
        t = type(v)
        for k in scalars:
            if t in k.exact:  # bytes: its kind measures it; no try-and-fail
                return k.enc(v, budget)
        for k in scalars:
            try:
                return k.enc(v, budget)
            except FieldError:
                pass
        raise _mismatch(text, v)

    return _Kind(
        text,
        exact,
        dec,
        enc,
        "scalar" if not (array or mapping) else "union",
        exact_enc=exact_enc,
        buffers=any(k.buffers for k in members),
        schemas=tuple(s for k in members for s in k.schemas),
    )


def _compile(tp: Any) -> _Kind:
    if tp is Any:
        return _any()
    if tp is None or tp is _NONE:
        return _scalar(_NONE)
    if tp in (str, int, float, bool, bytes):
        return _scalar(tp)
    if tp is memoryview:
        return _memoryview()
    if _is_ndarray_class(tp):
        return _ndarray(())
    if isinstance(tp, type) and name_of(tp) is not None:
        return _nested(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _compile(args[0])
    if _is_ndarray_class(origin):  # numpy.ndarray[shape, dtype], npt.NDArray[X]
        return _ndarray(args)
    if origin is typing.Union or origin is types.UnionType:
        return _union([_compile(a) for a in _union_members(tp)])
    if tp is list or origin is list:
        return _sequence(_compile(args[0]) if args else _any(), as_tuple=False)
    if tp is tuple or tp is typing.Tuple:  # noqa: UP006 (bare typing.Tuple)
        return _sequence(_any(), as_tuple=True)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(_compile(args[0]), as_tuple=True)
        if args in ((), ((),)):  # tuple[()]
            return _fixed_tuple([])
        return _fixed_tuple([_compile(a) for a in args])
    if tp is dict or origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"dict keys must be str on the wire, not {args[0]!r}")
        return _dict(_compile(args[1]) if args else _any())
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        raise TypeError(f"{tp.__qualname__} is a dataclass but not a @message; decorate it")
    raise TypeError(f"unsupported annotation {tp!r}")


def _union_members(tp: Any) -> list[Any]:
    """Members of a union, with ``Annotated`` stripped and inner unions flattened."""
    members: list[Any] = []
    for arg in typing.get_args(tp):
        while typing.get_origin(arg) is typing.Annotated:
            arg = typing.get_args(arg)[0]
        if typing.get_origin(arg) in (typing.Union, types.UnionType):
            members.extend(m for m in _union_members(arg) if m not in members)
        elif arg not in members:
            members.append(arg)
    return members


class MessageSchema:
    """The compiled converters of one ``@message`` class (see :func:`schema_for`).

    ``buffers`` is true when a buffer (``bytes``, ``memoryview``, an ndarray,
    ``Any``) can stand anywhere in the message, nested messages included: only
    then does the codec prepare its frame sink for the message.
    """

    __slots__ = ("buffers", "cls", "dec_fields", "enc_fields", "kinds", "name", "qualname")

    def __init__(self, cls: type, name: str) -> None:
        self.cls = cls
        self.name = name
        self.qualname = cls.__qualname__
        self.buffers = False
        self.kinds: tuple[_Kind, ...] = ()
        # (field name, exact types, decoder, required)
        self.dec_fields: tuple[tuple[str, frozenset[type], Converter, bool], ...] = ()
        # (field name, exact types, encoder)
        self.enc_fields: tuple[tuple[str, frozenset[type], Converter], ...] = ()

    def _set_fields(self, fields: list[tuple[str, _Kind, bool]]) -> None:
        self.kinds = tuple(kind for _, kind, _ in fields)
        self.dec_fields = tuple((name, k.exact, k.dec, req) for name, k, req in fields)
        self.enc_fields = tuple((name, k.exact_enc, k.enc) for name, k, _ in fields)  # type: ignore[misc]

    def _reaches_buffers(self) -> bool:
        seen = {id(self)}
        stack: list[MessageSchema] = [self]
        while stack:
            for kind in stack.pop().kinds:
                if kind.buffers:
                    return True
                for schema in kind.schemas:
                    if id(schema) not in seen:
                        seen.add(id(schema))
                        stack.append(schema)
        return False

    def decode_fields(self, data: dict[Any, Any], budget: int) -> Any:
        """Build an instance from a decoded map; raises :class:`FieldError`."""
        if budget <= 0:
            raise _too_deep()
        left = budget - 1
        kwargs: dict[str, Any] = {}
        found = 0
        name = ""
        try:
            for name, exact, dec, required in self.dec_fields:
                v = data.get(name, _MISSING)
                if v is _MISSING:
                    if required:
                        raise FieldError("missing, and the field has no default")
                    continue
                found += 1
                kwargs[name] = v if type(v) in exact else dec(v, left)
        except FieldError as exc:
            exc.path.append("." + name)
            raise
        if found != len(data):
            self._check_unknown(data, left)
        try:
            return self.cls(**kwargs)
        except Exception as exc:
            raise FieldError(f"constructing {self.qualname} failed: {exc!r}") from exc

    def _check_unknown(self, data: dict[Any, Any], budget: int) -> None:
        # Unknown fields are ignored (forward compatibility) but still bounded.
        known = {f[0] for f in self.dec_fields}
        for key, v in data.items():
            if type(key) is not str:
                raise FieldError(f"field names must be str, got {describe(key)}")
            if key not in known:
                try:
                    check_plain_decoded(v, budget)
                except FieldError as exc:
                    exc.path.append("." + key)
                    raise

    def encode_fields(self, obj: Any, budget: int) -> dict[str, Any]:
        """The msgpack map of ``obj``'s fields; raises :class:`FieldError`."""
        if budget <= 0:
            raise _too_deep()
        left = budget - 1
        out: dict[str, Any] = {}
        name = ""
        try:
            for name, exact, enc in self.enc_fields:
                v = getattr(obj, name)
                out[name] = v if type(v) in exact else enc(v, left)
        except FieldError as exc:
            exc.path.append("." + name)
            raise
        return out


_SCHEMAS: dict[type, MessageSchema] = {}
"""Fully compiled schemas; read without a lock on the hot path."""
_COMPILING: dict[type, MessageSchema] = {}
"""Schemas being compiled (recursive types see them); published all at once."""
_LOCK = threading.RLock()


def schema_for(cls: type) -> MessageSchema:
    """The schema of a registered message class, compiled once and cached.

    Raises ``TypeError`` if ``cls`` is not a registered ``@message`` or a field
    has an annotation the wire cannot carry. Thread-safe: a schema becomes
    visible only when it and every schema it refers to are complete.
    """
    schema = _SCHEMAS.get(cls)
    if schema is not None:
        return schema
    with _LOCK:
        schema = _SCHEMAS.get(cls) or _COMPILING.get(cls)
        if schema is not None:
            return schema
        name = name_of(cls)
        if name is None:
            raise TypeError(f"{cls.__qualname__} is not a registered @message class")
        outermost = not _COMPILING
        schema = _COMPILING[cls] = MessageSchema(cls, name)
        try:
            schema._set_fields(_compile_fields(cls))
        except BaseException:
            if outermost:
                _COMPILING.clear()
            raise
        if outermost:
            # Every schema reachable from these is complete now (recursion included).
            for compiled in _COMPILING.values():
                compiled.buffers = compiled._reaches_buffers()
            _SCHEMAS.update(_COMPILING)
            _COMPILING.clear()
        return schema


def _compile_fields(cls: type) -> list[tuple[str, _Kind, bool]]:
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:
        raise TypeError(f"cannot resolve the annotations of {cls.__qualname__}: {exc}") from exc
    compiled: list[tuple[str, _Kind, bool]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue  # not settable through __init__: not part of the wire form
        try:
            kind = _compile(hints.get(f.name, Any))
        except (TypeError, RecursionError) as exc:
            raise TypeError(f"field {f.name!r} of {cls.__qualname__}: {exc}") from exc
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        compiled.append((f.name, kind, required))
    return compiled
