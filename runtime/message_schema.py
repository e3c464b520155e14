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
``memoryview`` are accepted when encoding), ``None``, ``X | None``, unions of
those with at most one array type and one map type, ``list[X]``,
``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]``, nested ``@message``
classes (also recursive ones), and ``Any`` (any plain msgpack value). Anything
else (``set``, ``datetime``, a plain class) is refused with a ``TypeError``
when the class is first encoded or decoded, rather than guessed at.

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
    return "None" if value is None else type(value).__name__


def _mismatch(expected: str, value: object) -> FieldError:
    return FieldError(f"expected {expected}, got {describe(value)}")


def _too_deep() -> FieldError:
    return FieldError("nests deeper than max_depth", limit=True)


def check_plain_decoded(value: Any, budget: int) -> None:
    """Check a value unpacked by msgpack: str map keys, depth within ``budget``.

    Iterative, so a hostile nesting cannot exhaust the Python stack; msgpack
    already guarantees that the scalars are plain.
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
        else:
            raise FieldError(
                f"{type(item).__module__}.{type(item).__qualname__} is not a plain msgpack "
                "value (None, bool, int, float, str, bytes, list, tuple, dict with str keys)"
            )


@dataclasses.dataclass(slots=True)
class _Kind:
    """A compiled annotation.

    Values whose exact type is in ``exact`` pass unchanged in both directions;
    any other value goes through ``dec`` (decoding) or ``enc`` (encoding).
    ``shape`` is "scalar", "array", "map", "any" or "union" (used to build
    unions, which must stay unambiguous).
    """

    text: str
    exact: frozenset[type]
    dec: Converter
    enc: Converter
    shape: str


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

        def enc(v: Any, budget: int) -> Any:
            if isinstance(v, bytes | bytearray | memoryview):
                return v
            raise _mismatch("bytes", v)

    return _Kind(name, frozenset({tp}), dec, enc, "scalar")


def _any() -> _Kind:
    def dec(v: Any, budget: int) -> Any:
        check_plain_decoded(v, budget)
        return v

    def enc(v: Any, budget: int) -> Any:
        check_plain_encodable(v, budget)
        return v

    return _Kind("Any", _SCALARS, dec, enc, "any")


def _sequence(item: _Kind, *, as_tuple: bool) -> _Kind:
    text = f"tuple[{item.text}, ...]" if as_tuple else f"list[{item.text}]"
    exact, idec, ienc = item.exact, item.dec, item.enc

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
            if type(x) in exact:
                out.append(x)
                continue
            try:
                out.append(ienc(x, left))
            except FieldError as exc:
                exc.path.append(f"[{i}]")
                raise
        return out

    return _Kind(text, frozenset(), dec, enc, "array")


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
            if type(x) in kind.exact:
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
    )


def _dict(value: _Kind) -> _Kind:
    text = f"dict[str, {value.text}]"
    exact, vdec, venc = value.exact, value.dec, value.enc

    def convert(v: Any, budget: int, encoding: bool) -> Any:
        if not (isinstance(v, dict) if encoding else type(v) is dict):
            raise _mismatch(text, v)
        if budget <= 0:
            raise _too_deep()
        conv = venc if encoding else vdec
        out = {}
        for key, x in v.items():
            if not isinstance(key, str):
                raise FieldError(f"map keys must be str, got {describe(key)}")
            if type(x) in exact:
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

    return _Kind(cls.__qualname__, frozenset(), dec, enc, "map")


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

    def dec(v: Any, budget: int) -> Any:
        t = type(v)
        target = array if t is list else mapping if t is dict else None
        if target is not None:
            return target.dec(v, budget)
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
        for k in scalars:
            try:
                return k.enc(v, budget)
            except FieldError:
                pass
        raise _mismatch(text, v)

    return _Kind(text, exact, dec, enc, "scalar" if not (array or mapping) else "union")


def _compile(tp: Any) -> _Kind:
    if tp is Any:
        return _any()
    if tp is None or tp is _NONE:
        return _scalar(_NONE)
    if tp in (str, int, float, bool, bytes):
        return _scalar(tp)
    if isinstance(tp, type) and name_of(tp) is not None:
        return _nested(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _compile(args[0])
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
    """The compiled converters of one ``@message`` class (see :func:`schema_for`)."""

    __slots__ = ("cls", "fields", "name", "qualname")

    def __init__(self, cls: type, name: str) -> None:
        self.cls = cls
        self.name = name
        self.qualname = cls.__qualname__
        # (field name, exact types, decoder, encoder, required)
        self.fields: tuple[tuple[str, frozenset[type], Converter, Converter, bool], ...] = ()

    def decode_fields(self, data: dict[Any, Any], budget: int) -> Any:
        """Build an instance from a decoded map; raises :class:`FieldError`."""
        if budget <= 0:
            raise _too_deep()
        left = budget - 1
        kwargs: dict[str, Any] = {}
        found = 0
        name = ""
        try:
            for name, exact, dec, _enc, required in self.fields:
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
        known = {f[0] for f in self.fields}
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
            for name, exact, _dec, enc, _required in self.fields:
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
            schema.fields = _compile_fields(cls)
        except BaseException:
            if outermost:
                _COMPILING.clear()
            raise
        if outermost:
            _SCHEMAS.update(_COMPILING)
            _COMPILING.clear()
        return schema


def _compile_fields(
    cls: type,
) -> tuple[tuple[str, frozenset[type], Converter, Converter, bool], ...]:
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:
        raise TypeError(f"cannot resolve the annotations of {cls.__qualname__}: {exc}") from exc
    compiled = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue  # not settable through __init__: not part of the wire form
        try:
            kind = _compile(hints.get(f.name, Any))
        except (TypeError, RecursionError) as exc:
            raise TypeError(f"field {f.name!r} of {cls.__qualname__}: {exc}") from exc
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        compiled.append((f.name, kind.exact, kind.dec, kind.enc, required))
    return tuple(compiled)
