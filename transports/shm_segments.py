"""Shared-memory segments of ``shm://``: creation, the per-link pool, read-only mappings, sweep.

A segment is a file in ``/dev/shm`` (POSIX shared memory on Linux) named
``smesh-<pid>-<n>``: the pid of the process that created it, then a counter.
The name is the whole protocol: the sender writes an attachment into a
segment and sends the name over the Unix socket; the receiver opens the same
name read-only and maps it.

Why these choices:

* **Created 0600 with O_CREAT|O_EXCL|O_NOFOLLOW**: only the same user can open
  a segment, and a name that already exists (a leftover, or a planted
  symlink) is never reused or followed.
* **posix_fallocate before use**: ``/dev/shm`` is a tmpfs; writing into a
  sparse segment when it is full raises SIGBUS and kills the process.
  Allocating up front turns "full" into an ``OSError`` the pool handles by
  sending that frame over the socket instead.
* **A pool per link, reused after RELEASE**: fresh pages fault slowly (the
  kernel zeroes and maps every page; ``bulk.shm_fresh`` vs ``bulk.shm_view``
  in ``shared/BASELINES.md`` is about 8x), so a segment the receiver has let
  go of is kept mapped and written again. The pool is bounded in bytes.
* **The creating pid in the name** lets :func:`sweep_orphans` remove what a
  SIGKILLed process left behind: a segment whose pid is dead (or a zombie).
* **The receiver maps each frame by itself** (:class:`ReceivedSegment`, a
  read-only ``mmap`` subclass): the mapping is unmapped by CPython when the
  last ``memoryview`` or numpy array over it is garbage-collected, and a
  ``weakref.finalize`` on it tells the sender the segment is free again. No
  ``SharedMemory.close()`` is ever called on exported buffers (it raises
  ``BufferError``).

Trust: a peer is a process of the same user on the same host (the Unix
socket and the 0600 segments enforce that). A malicious peer of the same
user could still shrink a segment after the receiver mapped it, and the
receiver would get SIGBUS on access; sealed ``memfd`` segments passed over the
socket would close that hole and are not implemented.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import os
import re
import stat
import time
from pathlib import Path

log = logging.getLogger("synaptic_mesh.shm")

SHM_ROOT = Path("/dev/shm")
PREFIX = "smesh-"
NAME_RE = re.compile(r"smesh-([1-9][0-9]{0,9})-([0-9]{1,20})\Z")
MiB = 1024 * 1024
SMALLEST = 64 * 1024
"""Capacity of the smallest segment; capacities double up to 1 MiB, then grow by 1 MiB."""
REUSE_WASTE = 4
"""A free segment serves a frame only if it is at most this many times the frame's rounded size."""

_counter = itertools.count(1)


class BadSegment(Exception):
    """A segment named by a peer cannot be used (missing, too small, not the peer's)."""


def available() -> bool:
    """Whether POSIX shared memory is usable here (Linux: a writable ``/dev/shm``)."""
    return SHM_ROOT.is_dir() and os.access(SHM_ROOT, os.W_OK | os.X_OK)


def capacity_for(size: int) -> int:
    """The capacity of a new segment for a frame of ``size`` bytes (see ``SMALLEST``)."""
    if size <= SMALLEST:
        return SMALLEST
    if size < MiB:
        return 1 << (size - 1).bit_length()
    return -(-size // MiB) * MiB


class Segment:
    """A segment this process created: its name, capacity and writable mapping.

    ``generation`` counts uses, so a RELEASE names the use it ends and a stale
    or forged RELEASE is recognised. ``busy`` is true from the send until that
    RELEASE; ``freed_at`` is the monotonic time of the last RELEASE.
    """

    __slots__ = ("busy", "capacity", "freed_at", "generation", "map", "name")

    def __init__(self, name: str, capacity: int, mapping: mmap.mmap) -> None:
        self.name = name
        self.capacity = capacity
        self.map = mapping
        self.generation = 0
        self.busy = False
        self.freed_at = time.monotonic()

    def __repr__(self) -> str:
        return f"<Segment {self.name} {self.capacity} bytes {'busy' if self.busy else 'free'}>"


def create_segment(capacity: int) -> Segment:
    """A new 0600 segment of ``capacity`` bytes, allocated and mapped read-write.

    Raises ``OSError`` (``ENOSPC`` when ``/dev/shm`` is full); nothing is left
    behind on failure.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(64):
        name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
        path = SHM_ROOT / name
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:  # left by a dead process with our pid: skip the name
            continue
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.posix_fallocate(fd, 0, capacity)
            # MAP_POPULATE builds the page tables in one go: the first copy into
            # the segment then runs at memcpy speed instead of faulting per page.
            mapping = mmap.mmap(
                fd,
                capacity,
                mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
        except BaseException:
            os.close(fd)
            unlink_segment(name)
            raise
        os.close(fd)
        return Segment(name, capacity, mapping)
    raise FileExistsError(f"no free segment name for pid {os.getpid()} in {SHM_ROOT}")


def unlink_segment(name: str) -> None:
    """Remove segment ``name`` from ``/dev/shm`` (mappings stay valid until unmapped)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SHM_ROOT / name)


class SegmentPool:
    """The segments one link sends through, bounded by ``limit`` bytes in total.

    ``acquire`` hands out the smallest free segment that fits (not more than
    ``REUSE_WASTE`` times too big), else creates one, first unlinking free
    segments (least recently freed first) to stay within ``limit``. When
    every byte of the pool is busy (the receiver still holds what it got),
    or ``/dev/shm`` is full, it returns ``None`` and the caller sends that
    frame over the socket instead: the pool never grows past ``limit``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.segments: dict[str, Segment] = {}
        self.bytes = 0
        self.closed = False
        self.created = 0  # counters, for tests and the benchmark
        self.reused = 0
        self.fallbacks = 0

    @property
    def busy(self) -> int:
        """Segments sent and not released yet."""
        return sum(1 for s in self.segments.values() if s.busy)

    def acquire(self, size: int) -> Segment | None:
        """A segment of at least ``size`` bytes marked busy, or ``None`` (see class docstring)."""
        if self.closed:
            return None
        wanted = capacity_for(size)
        best: Segment | None = None
        for segment in self.segments.values():
            if (
                not segment.busy
                and size <= segment.capacity <= wanted * REUSE_WASTE
                and (best is None or segment.capacity < best.capacity)
            ):
                best = segment
        if best is not None:
            self.reused += 1
        else:
            best = self._create(wanted)
            if best is None:
                self.fallbacks += 1
                return None
        best.busy = True
        best.generation += 1
        return best

    def _create(self, capacity: int) -> Segment | None:
        if capacity > self.limit:
            return None
        while self.bytes + capacity > self.limit:
            free = [s for s in self.segments.values() if not s.busy]
            if not free:
                return None
            self._drop(min(free, key=lambda s: s.freed_at))
        try:
            segment = create_segment(capacity)
        except OSError as exc:
            log.warning(
                "cannot create a %d-byte shared-memory segment (%s); using the socket",
                capacity,
                exc,
            )
            return None
        self.segments[segment.name] = segment
        self.bytes += capacity
        self.created += 1
        return segment

    def give_back(self, segment: Segment) -> None:
        """Undo an ``acquire`` whose frame was never sent."""
        segment.busy = False
        segment.freed_at = time.monotonic()

    def release(self, name: str, generation: int) -> None:
        """The receiver let go of ``name`` (use ``generation``); raises ``BadSegment`` if
        no such use is outstanding."""
        segment = self.segments.get(name)
        if segment is None:
            raise BadSegment(f"RELEASE for unknown segment {name!r}")
        if not segment.busy or segment.generation != generation:
            state = f"use {segment.generation}" if segment.busy else "not in use"
            raise BadSegment(f"RELEASE of segment {name!r} use {generation}, but it is {state}")
        segment.busy = False
        segment.freed_at = time.monotonic()

    def trim(self, idle: float) -> bool:
        """Unlink free segments unused for ``idle`` seconds; True if free ones remain."""
        cutoff = time.monotonic() - idle
        for segment in [s for s in self.segments.values() if not s.busy and s.freed_at <= cutoff]:
            self._drop(segment)
        return any(not s.busy for s in self.segments.values())

    def _drop(self, segment: Segment) -> None:
        del self.segments[segment.name]
        self.bytes -= segment.capacity
        unlink_segment(segment.name)
        with contextlib.suppress(BufferError):
            segment.map.close()

    def close(self) -> None:
        """Unlink every segment (receivers keep what they have mapped); idempotent."""
        self.closed = True
        for segment in list(self.segments.values()):
            self._drop(segment)


class ReceivedSegment(mmap.mmap):
    """A read-only mapping of one received frame: the object every view of it keeps alive.

    ``memoryview(received)`` is what the node gets as the frame; numpy arrays
    the codec builds over it keep it alive through their ``base`` chain, so it
    is unmapped exactly when the last of them is gone.
    """

    __slots__ = ("segment",)


def map_received(name: str, length: int, peer_pid: int | None) -> ReceivedSegment:
    """Map the first ``length`` bytes of the peer's segment ``name`` read-only.

    Raises :class:`BadSegment` when the name is not one the peer process may
    have created, the segment does not exist, is not a regular file of this
    user, or is smaller than ``length``.
    """
    match = NAME_RE.match(name)
    if match is None:
        raise BadSegment(f"{name!r} is not a segment name (smesh-<pid>-<n>)")
    if peer_pid is not None and int(match.group(1)) != peer_pid:
        raise BadSegment(f"segment {name!r} was not created by the peer (pid {peer_pid})")
    try:
        fd = os.open(SHM_ROOT / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadSegment(f"shared-memory segment {name!r} does not exist") from None
    except OSError as exc:
        raise BadSegment(f"cannot open shared-memory segment {name!r}: {exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise BadSegment(f"{name!r} is not a shared-memory segment of this user")
        if info.st_size < length:
            raise BadSegment(
                f"shared-memory segment {name!r} is {info.st_size} bytes, too small for "
                f"a frame of {length} bytes"
            )
        mapping = ReceivedSegment(fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
    except OSError as exc:
        raise BadSegment(f"cannot map shared-memory segment {name!r}: {exc}") from None
    finally:
        os.close(fd)
    mapping.segment = name
    return mapping


# -- orphans ---------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as dead: it can never release)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def sweep_orphans() -> list[str]:
    """Unlink this user's segments whose creating process is dead; returns their names.

    Run at every ``shm://`` start, so what a SIGKILLed node left in
    ``/dev/shm`` is gone the next time a node starts on the machine. A
    process in another pid namespace sharing ``/dev/shm`` looks dead from
    here: do not share ``/dev/shm`` across pid namespaces with shm nodes.
    """
    if not available():
        return []
    swept: list[str] = []
    me, uid = os.getpid(), os.getuid()
    dead: dict[int, bool] = {}
    with os.scandir(SHM_ROOT) as entries:
        for entry in entries:
            match = NAME_RE.match(entry.name)
            if match is None:
                continue
            pid = int(match.group(1))
            if pid == me:
                continue
            if pid not in dead:
                dead[pid] = not pid_alive(pid)
            if not dead[pid]:
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                os.unlink(entry.path)
                swept.append(entry.name)
    if swept:
        log.info("removed %d orphaned shared-memory segments of dead processes", len(swept))
    return swept
