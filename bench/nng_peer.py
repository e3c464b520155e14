"""The raw floors of ``bench/nng.py``: pynng with asyncio and no framework, in its own process.

``python -m synaptic_mesh.bench.nng_peer MODE URL`` listens with a ``Pair1``
socket on ``URL`` (``tcp://127.0.0.1:0`` or ``ipc:///path``), prints
``READY <url actually bound>`` and serves until its stdin closes. Each NNG
message's first byte says what to do: ``E`` echo it back, ``C`` count it,
``R`` reply with the count (8 bytes, big-endian) and reset it.

Two ways to drive pynng from asyncio, the same on both sides:

* ``aio``: pynng's asyncio API, the way its documentation shows it:
  ``await arecv()`` and ``await asend()``. Every call completes in an NNG
  thread that takes the GIL and wakes the event loop. The bench's targets
  are ratios against this floor.
* ``poll``: NNG's pollable descriptors (``recv_fd``/``send_fd``) with
  ``loop.add_reader`` and non-blocking ``nng_recvmsg``/``nng_sendmsg``, the
  technique ``transports/nng_link.py`` uses. Reported next to the others to
  show what the runtime itself adds on top of NNG.

:class:`RawNngClient` is the near side: the same measurements as the mesh
client of ``bench/_links_clients.py`` (``rtt`` and ``oneway``).
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from typing import Any

import pynng
from pynng import ffi, lib

_COUNT = struct.Struct(">Q")
PAYLOAD = 64
SEND_BUFFER = 128


class PollSocket:
    """A ``Pair1`` socket driven through its pollable descriptors (no NNG thread calls Python)."""

    def __init__(self, sock: pynng.Socket) -> None:
        self.sock = sock
        self.id = sock.socket
        self.recv_fd = sock.recv_fd
        self.send_fd = sock.send_fd
        self.msg_p = ffi.new("nng_msg **")
        self.loop = asyncio.get_running_loop()

    async def _wait(self, fd: int) -> None:
        waiter = self.loop.create_future()
        self.loop.add_reader(fd, lambda: waiter.done() or waiter.set_result(None))
        try:
            await waiter
        finally:
            self.loop.remove_reader(fd)

    async def asend(self, data: bytes) -> None:
        msg_p = ffi.new("nng_msg **")
        lib.nng_msg_alloc(msg_p, len(data))
        msg = msg_p[0]
        ffi.memmove(lib.nng_msg_body(msg), data, len(data))
        while (rv := lib.nng_sendmsg(self.id, msg, lib.NNG_FLAG_NONBLOCK)) == lib.NNG_EAGAIN:
            await self._wait(self.send_fd)
        if rv:
            lib.nng_msg_free(msg)
            pynng.exceptions.check_err(rv)

    async def arecv(self) -> bytes:
        while (rv := lib.nng_recvmsg(self.id, self.msg_p, lib.NNG_FLAG_NONBLOCK)) == lib.NNG_EAGAIN:
            await self._wait(self.recv_fd)
        pynng.exceptions.check_err(rv)
        msg = self.msg_p[0]
        data = ffi.buffer(lib.nng_msg_body(msg), lib.nng_msg_len(msg))[:]
        lib.nng_msg_free(msg)
        return data

    def close(self) -> None:
        self.sock.close()


def _driver(mode: str, sock: pynng.Socket) -> Any:
    return PollSocket(sock) if mode == "poll" else sock


async def serve(mode: str, url: str) -> None:
    with pynng.Pair1(send_buffer_size=SEND_BUFFER, recv_buffer_size=SEND_BUFFER) as sock:
        listener = sock.listen(url)
        print("READY", listener.url, flush=True)
        driver = _driver(mode, sock)
        count = 0

        async def loop() -> None:
            nonlocal count
            while True:
                data = await driver.arecv()
                kind = data[:1]
                if kind == b"E":
                    await driver.asend(data)
                elif kind == b"C":
                    count += 1
                else:
                    await driver.asend(_COUNT.pack(count))
                    count = 0

        server = asyncio.ensure_future(loop())
        await asyncio.to_thread(sys.stdin.read)
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


class RawNngClient:
    """A ``Pair1`` socket dialed to a :func:`serve` process, driven the same way (``mode``)."""

    def __init__(self, sock: pynng.Socket, mode: str) -> None:
        self.sock = sock
        self.driver = _driver(mode, sock)

    @classmethod
    async def connect(cls, url: str, mode: str = "aio") -> RawNngClient:
        sock = pynng.Pair1(send_buffer_size=SEND_BUFFER, recv_buffer_size=SEND_BUFFER)
        sock.dial(url, block=True)
        return cls(sock, mode)

    async def rtt(self, n: int) -> list[float]:
        frame = b"E" + bytes(PAYLOAD - 1)
        send, recv, samples = self.driver.asend, self.driver.arecv, []
        clock = time.perf_counter_ns
        for _ in range(n):
            t0 = clock()
            await send(frame)
            await recv()
            samples.append((clock() - t0) / 1000)
        return samples

    async def oneway(self, n: int) -> float:
        frame = b"C" + bytes(PAYLOAD - 1)
        send = self.driver.asend
        t0 = time.perf_counter()
        for _ in range(n):
            await send(frame)
        await send(b"R")
        (count,) = _COUNT.unpack(await self.driver.arecv())
        elapsed = time.perf_counter() - t0
        assert count == n, f"the raw peer counted {count} of {n}"
        return n / elapsed

    async def close(self) -> None:
        self.sock.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
