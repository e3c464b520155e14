"""Attachments: large buffers of a ``@message`` travel as frames of their own.

A field holding ``bytes``, ``bytearray``, ``memoryview`` or a
``numpy.ndarray`` of at least ``CodecLimits.attachment_threshold`` bytes is
not copied into frame 0: the buffer itself (a memoryview over it, never a
copy) is appended to the frame list and frame 0 holds a small **attachment
reference** in its place. Transports move frames without parsing them, so a
100 MB array crosses a process boundary as one buffer, and with a zero-copy
transport (``shm://``) it is never copied at all.

The reference is msgpack ext type :data:`ATTACHMENT_EXT` whose data is itself
a msgpack array (layout in ``docs/wire-format.md``):

* ``[frame]``: the raw bytes of frame ``frame`` (1 is the first frame after
  frame 0);
* ``[frame_or_bin, dtype, shape, order]``: an n-dimensional array of
  ``dtype`` (numpy's ``dtype.str``, e.g. ``"<f4"``), ``shape`` (array of
  ints) and ``order`` (``"C"`` or ``"F"``), its data in frame ``frame`` or
  inline as ``bin`` (arrays below the threshold).

Why an ext type: the decoder refuses every other ext type, so a reference can
never be confused with user data (a map with a reserved key could collide
with a user's ``dict`` in an ``Any`` field), and any msgpack library can read
it. Numpy is never imported by this module: only when a value actually is an
ndarray (then numpy is already loaded) or a reference carries a dtype.

How the pieces meet, chosen so that a message without large buffers pays
nothing:

* Encoding: the converters of :mod:`synaptic_mesh.runtime.message_schema`
  check a buffer and, unless it is below every threshold in use, leave a
  :class:`Pending` in the wire body; the codec's msgpack ``Packer`` hands it
  to its ``default`` hook, a per-thread :class:`FrameSink` that knows the
  call's threshold and frame numbers and returns the reference (or the
  inline value).
* Decoding: a frame 0 without ext values unpacks exactly as before. One
  with them is unpacked again with :func:`ext_hook`, which turns each
  reference into an :class:`AttachmentRef`; the codec installs a per-thread
  :class:`Resolver` over the frames while the body is converted, and the
  converters ask it for the buffer. Decoding is synchronous, so the
  thread-local cannot leak between coroutines.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Sequence
from typing import Any, Final

import msgpack

__all__ = [
    "ATTACHMENT_EXT",
    "MAX_NDIM",
    "AttachmentError",
    "AttachmentRef",
    "BadReference",
    "ExtRefused",
    "FrameSink",
    "Pending",
    "Resolver",
    "buffer_size",
    "current_resolver",
    "ext_hook",
    "is_ndarray",
    "note_threshold",
    "pend_array",
    "pend_raw",
    "set_resolver",
]

ATTACHMENT_EXT: Final = 1
"""The msgpack ext type code reserved for attachment references."""

MAX_NDIM: Final = 32
"""Most dimensions of an array reference (numpy allows 64; 32 is numpy 1.x's limit)."""

ARRAY_KINDS: Final = "biufc"
"""numpy dtype kinds that may travel: bool, signed, unsigned, float, complex.
Object arrays hold pointers; str, void, structured and datetime dtypes have no
byte layout a foreign client could rely on."""

_DTYPE_RE: Final = re.compile(r"[<>|]([biufc])([1-9][0-9]?)\Z")
"""``dtype.str`` of an allowed dtype: byte order, kind, item size in bytes."""

_MAX_BYTES: Final = 2**63 - 1
"""No buffer may claim more bytes than a signed 64-bit size (numpy's intp)."""


class AttachmentError(Exception):
    """A buffer cannot be encoded or a reference cannot be resolved.

    ``limit`` is true when a bound, not a type, failed. The message schema
    turns it into its ``FieldError`` (so the reason names the field).
    """

    def __init__(self, detail: str, *, limit: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.limit = limit


class BadReference(Exception):
    """The data of an attachment-reference ext is malformed (raised while unpacking)."""


class AttachmentRef:
    """An attachment reference read from frame 0, not yet resolved.

    ``frame``: the frame number (>= 1), or 0 when ``data`` holds the bytes
    inline. ``dtype`` is ``None`` for raw bytes; otherwise ``shape``,
    ``order`` and ``nbytes`` (``prod(shape) * itemsize``) describe an array.
    """

    __slots__ = ("data", "dtype", "frame", "nbytes", "order", "shape")

    def __init__(
        self,
        frame: int,
        data: bytes | None = None,
        dtype: str | None = None,
        shape: tuple[int, ...] = (),
        order: str = "C",
        nbytes: int = -1,
    ) -> None:
        self.frame = frame
        self.data = data
        self.dtype = dtype
        self.shape = shape
        self.order = order
        self.nbytes = nbytes

    def __repr__(self) -> str:
        where = f"frame {self.frame}" if self.frame else f"{len(self.data or b'')} bytes inline"
        if self.dtype is None:
            return f"AttachmentRef({where})"
        return f"AttachmentRef({where}, dtype={self.dtype!r}, shape={self.shape}, {self.order})"


# ------------------------------------------------------------------ decoding


class ExtRefused(Exception):
    """An ext type other than :data:`ATTACHMENT_EXT` (its code in ``args[0]``)."""


def ext_hook(code: int, data: bytes) -> AttachmentRef:
    """msgpack ``ext_hook``: an :class:`AttachmentRef` for our code, refuse the rest.

    Raises :class:`BadReference` for a malformed reference and :class:`ExtRefused`
    (code in ``args[0]``) for any other ext type; the codec words both.
    """
    if code != ATTACHMENT_EXT:
        raise ExtRefused(code)
    size = len(data)
    try:
        items = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=min(size, 64),
            max_bin_len=size,
            max_array_len=min(size, MAX_NDIM + 1),
            max_map_len=min(size, 4),
            max_ext_len=0,
        )
    except Exception as exc:
        raise BadReference(f"its data is not one msgpack array ({exc})") from None
    if type(items) is not list:
        raise BadReference(f"its data must be a msgpack array, got {_describe(items)}")
    count = len(items)
    if count == 1:
        frame = items[0]
        if type(frame) is not int or frame < 1:
            raise BadReference(f"frame number must be an int >= 1, got {frame!r}")
        return AttachmentRef(frame)
    if count != 4:
        raise BadReference(
            f"expected [frame] or [frame_or_bin, dtype, shape, order], got {count} items"
        )
    where, dtype, shape, order = items
    if type(dtype) is not str or (match := _DTYPE_RE.match(dtype)) is None:
        raise BadReference(
            f"dtype {dtype!r} is not allowed (bool or numeric only, e.g. '<f4', '|u1')"
        )
    if type(shape) is not list or len(shape) > MAX_NDIM:
        raise BadReference(f"shape must be an array of at most {MAX_NDIM} ints, got {shape!r}")
    count = 1
    big = int(match.group(2))  # the item size; then the product of non-zero dims
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise BadReference(f"shape {shape!r} must hold non-negative ints")
        count *= dim
        if dim:
            big *= dim
    if big > _MAX_BYTES:
        raise BadReference(f"shape {shape!r} of {dtype} overflows 2**63 - 1 bytes")
    if order != "C" and order != "F":
        raise BadReference(f"order must be 'C' or 'F', got {order!r}")
    nbytes = count * int(match.group(2))
    if type(where) is int:
        if where < 1:
            raise BadReference(f"frame number must be an int >= 1, got {where}")
        return AttachmentRef(where, None, dtype, tuple(shape), order, nbytes)
    if type(where) is bytes:
        if len(where) != nbytes:
            raise BadReference(
                f"inline data is {len(where)} bytes, but shape {shape} of {dtype} needs {nbytes}"
            )
        return AttachmentRef(0, where, dtype, tuple(shape), order, nbytes)
    raise BadReference(f"first item must be a frame number or bin, got {_describe(where)}")


class Resolver:
    """Resolves references against the frames of one envelope being decoded.

    Each frame may be referenced once: a buffer belongs to one field (a
    transport that releases a shared-memory segment when the message is done
    must know who holds it), and a hostile frame 0 cannot alias one buffer
    into many fields. Every check comes before the frame is marked used.
    """

    __slots__ = ("frames", "resolved", "used")

    def __init__(self, frames: Sequence[Any]) -> None:
        self.frames = frames
        self.used: set[int] = set()
        self.resolved = 0
        """References resolved, inline ones included: the codec compares it with
        the references frame 0 holds, so none can hide in a plain value."""

    def _frame(self, ref: AttachmentRef) -> tuple[Any, int]:
        n = ref.frame
        last = len(self.frames) - 1
        if n > last:
            after = f"only {last} attachment frame(s)" if last else "no attachment frames"
            raise AttachmentError(f"attachment reference to frame {n}, but {after} follow frame 0")
        if n in self.used:
            raise AttachmentError(
                f"frame {n} is referenced twice; an attachment frame may be referenced once"
            )
        frame = self.frames[n]
        t = type(frame)
        if t is bytes or t is bytearray:
            return frame, len(frame)
        if t is memoryview:
            return frame, frame.nbytes
        raise AttachmentError(f"frame {n} is {_describe(frame)}, not a buffer")

    def raw_bytes(self, ref: AttachmentRef) -> bytes:
        """``bytes`` for a raw reference: the frame itself if it is bytes, else a copy."""
        self._check_raw(ref)
        frame, _size = self._frame(ref)
        value = frame if type(frame) is bytes else bytes(frame)
        self.used.add(ref.frame)
        self.resolved += 1
        return value

    def raw_view(self, ref: AttachmentRef) -> memoryview:
        """A read-only, flat, byte-format memoryview over the frame (no copy)."""
        self._check_raw(ref)
        frame, _size = self._frame(ref)
        view = memoryview(frame)
        if view.ndim != 1 or view.format != "B":
            try:
                view = view.cast("B")
            except (TypeError, ValueError) as exc:
                raise AttachmentError(
                    f"frame {ref.frame} cannot be viewed as bytes: {exc}"
                ) from None
        self.used.add(ref.frame)
        self.resolved += 1
        return view.toreadonly()

    def _check_raw(self, ref: AttachmentRef) -> None:
        if ref.dtype is not None:
            raise AttachmentError(
                f"expected a raw buffer, got an ndarray reference (dtype {ref.dtype!r})"
            )

    def array(self, ref: AttachmentRef, scalar: type | None = None) -> Any:
        """A read-only ndarray over the frame or the inline data (no copy).

        ``scalar`` is the numpy scalar type an ``NDArray[...]`` annotation
        requires (any byte order); ``None`` accepts every allowed dtype.
        """
        if ref.dtype is None:
            raise AttachmentError("expected an ndarray reference, got a raw buffer reference")
        try:
            import numpy as np
        except ImportError:
            raise AttachmentError("numpy is not installed; an ndarray cannot be decoded") from None
        try:
            dtype = np.dtype(ref.dtype)
        except (TypeError, ValueError) as exc:
            raise AttachmentError(f"dtype {ref.dtype!r} is unknown here: {exc}") from None
        if dtype.kind not in ARRAY_KINDS or dtype.str[1:] != ref.dtype[1:]:
            raise AttachmentError(f"dtype {ref.dtype!r} is not allowed here")
        if scalar is not None and not issubclass(dtype.type, scalar):
            raise AttachmentError(f"expected an array of {scalar.__name__}, got dtype {dtype}")
        if ref.frame:
            buffer, size = self._frame(ref)
            if size != ref.nbytes:
                raise AttachmentError(
                    f"frame {ref.frame} is {size} bytes, but shape {list(ref.shape)} of "
                    f"{ref.dtype} needs {ref.nbytes}"
                )
        else:
            buffer = ref.data
        try:
            flat = np.frombuffer(buffer, dtype=dtype)
            array = flat.reshape(ref.shape, order=ref.order)  # type: ignore[call-overload]
        except (TypeError, ValueError, BufferError) as exc:
            raise AttachmentError(f"cannot build the array: {exc}") from None
        array.flags.writeable = False
        if ref.frame:
            self.used.add(ref.frame)
        self.resolved += 1
        return array

    def any(self, ref: AttachmentRef) -> Any:
        """For an ``Any`` field: an ndarray for an array reference, else a memoryview."""
        return self.raw_view(ref) if ref.dtype is None else self.array(ref)

    def unreferenced(self) -> tuple[Any, ...]:
        """The frames after frame 0 no reference used: the envelope's own attachments."""
        used = self.used
        frames = self.frames
        return tuple(frames[i] for i in range(1, len(frames)) if i not in used)


# ------------------------------------------------------------------ encoding


def is_ndarray(value: object) -> bool:
    """Whether ``value`` is a numpy array, without importing numpy.

    If numpy was never imported, nothing can be an ndarray.
    """
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def buffer_size(value: Any) -> int:
    """Bytes of a buffer (``len`` counts items of a multi-dimensional memoryview)."""
    t = type(value)
    if t is bytes or t is bytearray:
        return len(value)
    if t is memoryview:
        return value.nbytes
    return memoryview(value).nbytes


class Pending:
    """A buffer the converters leave in the wire body for the packer to place.

    The converters do not know the call's threshold nor the frame numbers;
    the codec's per-thread :class:`FrameSink` (the msgpack ``Packer``'s
    ``default`` hook) does, and it is consulted only for these objects, so a
    message without large buffers never pays for the machinery.
    """

    __slots__ = ("array", "value")

    def __init__(self, value: Any, array: bool) -> None:
        self.value = value
        self.array = array
        made.count += 1


class _Made(threading.local):
    """How many :class:`Pending` this thread has made (``made.count``).

    The codec reads it before and after converting a body: unchanged, the
    body holds no buffer to place, and frame 0 is packed without preparing
    the frame sink. Per thread, so another thread's messages never count.
    """

    def __init__(self) -> None:
        self.count = 0


made = _Made()


min_threshold = _MAX_BYTES
"""The smallest ``attachment_threshold`` of any ``CodecLimits`` created: a buffer
below it is inline whatever the limits of the call (no :class:`Pending` needed).
Read by the converters as ``attachments.min_threshold``; only ever lowered."""


def note_threshold(threshold: int) -> None:
    """Called by ``CodecLimits``: lower the bound under which buffers stay inline."""
    global min_threshold
    if threshold < min_threshold:
        min_threshold = threshold


def pend_raw(value: bytes | bytearray | memoryview) -> Any:
    """The wire value of a raw buffer: itself if small, else a :class:`Pending`.

    A memoryview that is not C-contiguous has no single buffer to send (msgpack
    cannot pack it either), so it is copied once into bytes.
    """
    if type(value) is memoryview:
        if not value.c_contiguous:
            value = value.tobytes()
            size = len(value)
        else:
            size = value.nbytes
    else:
        size = len(value)
    return value if size < min_threshold else Pending(value, False)


def pend_array(value: Any, scalar: type | None = None) -> Pending:
    """Check an ndarray for the wire; the sink places it (inline or as a frame).

    Raises :class:`AttachmentError` for what a peer must refuse: a subclass
    (a masked array's mask or a matrix's semantics would be dropped
    silently; ``np.memmap`` is fine), a dtype that is not bool or numeric, a
    scalar type other than ``scalar``, more than :data:`MAX_NDIM` dimensions.
    """
    import numpy as np  # already loaded: value is an ndarray

    if type(value) is not np.ndarray and not isinstance(value, np.memmap):
        raise AttachmentError(
            f"an ndarray subclass ({type(value).__qualname__}) cannot travel; "
            "send np.asarray(value)"
        )
    dtype = value.dtype
    if dtype.kind not in ARRAY_KINDS:
        raise AttachmentError(
            f"an ndarray of dtype {dtype} cannot travel: only bool and numeric dtypes"
        )
    if scalar is not None and not issubclass(dtype.type, scalar):
        raise AttachmentError(f"expected an array of {scalar.__name__}, got dtype {dtype}")
    if value.ndim > MAX_NDIM:
        raise AttachmentError(f"an ndarray of {value.ndim} dimensions, over {MAX_NDIM}", limit=True)
    return Pending(value, True)


class FrameSink:
    """Places the :class:`Pending` buffers of one message while frame 0 is packed.

    It is the ``default`` hook of the codec's per-thread msgpack ``Packer``:
    msgpack calls it for each object it cannot pack itself, which is only
    ever a :class:`Pending`. ``threshold`` and ``base`` (the frame number of
    the first buffer this sink adds: the envelope's own attachments come
    first) are set by the codec before packing; ``frames`` collects the
    buffers in the order frame 0 references them.
    """

    __slots__ = ("base", "frames", "threshold")

    def __init__(self) -> None:
        self.threshold = _MAX_BYTES
        self.base = 1
        self.frames: list[Any] = []

    def default(self, obj: Any) -> Any:
        """msgpack ``default``: the wire form of a :class:`Pending` buffer."""
        if type(obj) is not Pending:
            if isinstance(obj, int):  # msgpack asks about ints out of its range
                raise OverflowError(f"integer {obj} is out of range")
            raise TypeError(f"can not serialize {type(obj).__name__!r} object")
        if obj.array:
            return self._array(obj.value)
        return self._raw(obj.value)

    def _attach(self, frame: Any) -> int:
        n = self.base + len(self.frames)
        self.frames.append(frame)
        return n

    def _raw(self, value: bytes | bytearray | memoryview) -> Any:
        # ``value`` itself for bytes and a flat byte memoryview over it
        # otherwise: never a copy.
        if buffer_size(value) < self.threshold:
            return value
        if type(value) is bytes:
            frame: Any = value
        else:
            frame = memoryview(value)
            if frame.ndim != 1 or frame.format != "B":
                frame = frame.cast("B")
        return msgpack.ExtType(ATTACHMENT_EXT, msgpack.packb([self._attach(frame)]))

    def _array(self, value: Any) -> msgpack.ExtType:
        """An array reference, its data in a frame of its own at or above the
        threshold (a memoryview over the array, no copy), inline below it.

        A C-contiguous array travels as is, with order "C"; an F-contiguous one
        as is, with order "F" (its memory is its transpose's, read in C order);
        any other layout (a strided slice, a broadcast) is first made
        C-contiguous with ``np.ascontiguousarray``: the one copy such an array
        costs.
        """
        import numpy as np

        if value.flags.c_contiguous:
            order, flat = "C", value
        elif value.flags.f_contiguous:
            order, flat = "F", value.T
        else:
            order = "C"
            value = flat = np.ascontiguousarray(value)
        data = memoryview(flat.reshape(-1).view(np.uint8))  # views: no copy
        where: Any = self._attach(data) if value.nbytes >= self.threshold else data
        payload = msgpack.packb([where, value.dtype.str, list(value.shape), order])
        return msgpack.ExtType(ATTACHMENT_EXT, payload)


# ------------------------------------------------------------------ decoding context

_TLS = threading.local()


def current_resolver() -> Resolver:
    """The resolver of the envelope being decoded. Without one (a schema used
    outside the codec) a fresh one over no frames: inline arrays resolve,
    frame references fail."""
    resolver = getattr(_TLS, "resolver", None)
    return Resolver((None,)) if resolver is None else resolver


def set_resolver(resolver: Resolver | None) -> Resolver | None:
    """Install ``resolver`` for this thread; returns the previous one (to restore).

    The codec installs one only while decoding a frame 0 that holds
    references; decoding is synchronous, so it cannot leak to another task.
    """
    previous = getattr(_TLS, "resolver", None)
    _TLS.resolver = resolver
    return previous


def _describe(value: object) -> str:
    return "None" if value is None else type(value).__name__
