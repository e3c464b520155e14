"""Opening NNG links: a rendezvous socket per listening node, a ``Pair1`` socket per link.

NNG has no ``accept``: a listening socket owns every pipe that reaches it,
and a monogamous ``Pair1`` socket (the one that neither drops nor reorders,
see :mod:`~synaptic_mesh.transports.nng_link`) takes a single peer. So a
listening node binds a ``Rep0`` *rendezvous* socket on its advertised address,
and each link gets a ``Pair1`` socket of its own:

1. The dialer sends ``REQUEST`` (``b"SMNNG1?"``) from a ``Req0`` socket.
2. The listener opens a fresh ``Pair1`` socket listening on a private address
   (``tcp://HOST:0``, a free port on the host it is bound to; for IPC the path
   ``PATH.N`` beside its own socket) and replies ``b"SMNNG1+"``, a random
   16-byte token, then the port (TCP) or the path (IPC). It replies
   ``b"SMNNG1-"`` and a reason when it cannot.
3. The dialer opens its own ``Pair1`` socket, dials that address (TCP: the host
   it dialed in step 1, so a listener bound to ``0.0.0.0`` works) and sends
   the token as its first message. The listener hands the link to the router
   only once the token matches (within ``connect_timeout``); a stranger that
   reaches the private address first is refused and the dialer retries.

Cost: one request/reply and one extra listening socket per link (and, over
TCP, one more port the peer must be able to reach: open a port range in a
firewall between hosts). Bad input at the rendezvous (a foreign ``Req0``
peer sending anything but ``REQUEST``, or a wrong token on a private socket)
is logged at ERROR, refused, and reported through ``on_bad`` as a
:class:`~synaptic_mesh.transports.base.BadFrame`; the node goes on. At most
``MAX_PENDING`` link sockets wait for their token at once (each gives up after
``connect_timeout``); a flood of requests beyond that is refused. A peer of
another NNG protocol (``Pair1`` dialing the rendezvous, say) never gets that
far: NNG's SP handshake refuses the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
from collections.abc import Callable
from typing import Any

import pynng

from synaptic_mesh.transports.base import BadFrame, Link, LinkConnector, LinkListener
from synaptic_mesh.transports.framing import LinkLimits
from synaptic_mesh.transports.nng_link import NngLink, link_socket

log = logging.getLogger("synaptic_mesh.nng")

MAGIC = b"SMNNG1"
REQUEST = MAGIC + b"?"
ACCEPTED = MAGIC + b"+"
REFUSED = MAGIC + b"-"
TOKEN = 16
RENDEZVOUS_MAX = 4096
"""Largest message the rendezvous socket reads: a request is 7 bytes, a reply a path."""
MAX_PENDING = 64
"""Link sockets waiting for their dialer's token at once; more requests are refused, so a
peer flooding the rendezvous cannot make the node open sockets without bound."""
MAX_IPC_PATH = 107
"""``sun_path`` holds 108 bytes on Linux, the terminating NUL included."""


def nng_url(scheme: str, address: str) -> str:
    """The NNG URL of a node address: ``("tcp", "h:1")`` -> ``tcp://h:1``; ipc paths as is."""
    return f"{scheme}://{address}"


class NngListener(LinkListener):
    """The rendezvous ``Rep0`` socket of a listening node and the link sockets it opened."""

    def __init__(
        self,
        connector: NngConnector,
        address: str,
        accept: Callable[[Link], None],
    ) -> None:
        self._connector = connector
        self._accept = accept
        self._counter = itertools.count(1)
        self._pending: dict[asyncio.Task[None], pynng.Socket] = {}
        self._closed = False
        scheme = connector.scheme
        if scheme == "ipc":
            _check_ipc_path(address + ".99999")
            self.address = address
        self._rep = pynng.Rep0(recv_max_size=RENDEZVOUS_MAX)
        try:
            listener = self._rep.listen(nng_url(scheme, address))
        except pynng.NNGException as exc:
            self._rep.close()
            raise _os_error(exc, f"cannot listen on {scheme}://{address}") from None
        if scheme == "tcp":
            # The bound port comes from the listener's URL (pynng's local_address.port
            # is byte-swapped in 0.9).
            host = address.rpartition(":")[0]
            self._host = host
            self.address = f"{host}:{listener.url.rpartition(':')[2]}"
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._rep.close()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(self._task, *self._pending, return_exceptions=True)

    # -- rendezvous ------------------------------------------------------------------

    async def _serve(self) -> None:
        rep = self._rep
        while True:
            try:
                request = await rep.arecv_msg()
            except pynng.NNGException:
                return  # closed
            data = request.bytes
            if data == REQUEST:
                reply = self._open_link()
            else:
                reason = (
                    f"not a Synaptic Mesh link request ({len(data)} bytes, expected {REQUEST!r})"
                )
                self._connector.report(_remote(request), reason, data)
                reply = REFUSED + reason.encode()
            with contextlib.suppress(pynng.NNGException):
                await rep.asend(reply)
            if self._closed:
                return

    def _open_link(self) -> bytes:
        connector = self._connector
        if len(self._pending) >= MAX_PENDING:
            log.error(
                "%s: refusing a link request: %d link sockets already wait for their dialer",
                self.address,
                len(self._pending),
            )
            return REFUSED + b"too many links being opened at once; retry later"
        token = os.urandom(TOKEN)
        sock = link_socket(connector.limits)
        try:
            if connector.scheme == "tcp":
                listener = sock.listen(f"tcp://{self._host}:0")
                where = listener.url.rpartition(":")[2]
            else:
                where = f"{self.address}.{next(self._counter)}"
                sock.listen(f"ipc://{where}")  # NNG replaces a stale socket, refuses a live one
        except pynng.NNGException as exc:
            sock.close()
            log.error("%s: cannot open a link socket: %s", self.address, exc)
            return REFUSED + f"cannot open a link socket: {exc}".encode()
        task = asyncio.get_running_loop().create_task(self._await_token(sock, token, where))
        self._pending[task] = sock
        task.add_done_callback(self._pending.pop)
        return ACCEPTED + token + where.encode()

    async def _await_token(self, sock: pynng.Socket, token: bytes, where: str) -> None:
        """Hand the link over once its dialer proved it got the token; else close it."""
        connector = self._connector
        handed = False
        try:
            async with asyncio.timeout(connector.timeout):
                first = await sock.arecv_msg()
            pipe = first.pipe
            data = first.bytes
            if data != token or pipe is None:
                connector.report(
                    _remote(first), "a link socket's first message is not its token", data
                )
                return
            remote = _remote(first)
            link = NngLink(
                sock, pipe.id, connector.limits, f"nng link {where} <- {remote} (accepted)"
            )
            connector.track(link)
            handed = True
            self._accept(link)
        except TimeoutError:
            log.warning(
                "%s: nobody connected to link socket %s within %g s",
                self.address,
                where,
                connector.timeout,
            )
        except pynng.NNGException:
            pass  # closed while waiting
        finally:
            if not handed:
                sock.close()


class NngConnector(LinkConnector):
    """Listens and dials NNG links over ``scheme`` (``"tcp"`` or ``"ipc"``).

    ``timeout`` bounds the rendezvous of an accepted link; ``on_bad`` gets a
    :class:`BadFrame` for refused input at the rendezvous. ``live`` is every
    link opened and not yet closed, so the transport can wait for them at close.
    """

    def __init__(
        self,
        scheme: str,
        limits: LinkLimits,
        timeout: float,
        on_bad: Callable[[BadFrame], Any] | None = None,
    ) -> None:
        if scheme not in ("tcp", "ipc"):
            raise ValueError(f"NNG links run over tcp or ipc, not {scheme!r}")
        self.scheme = scheme
        self.limits = limits
        self.timeout = timeout or 2.0
        self.on_bad = on_bad
        self.live: set[NngLink] = set()

    def track(self, link: NngLink) -> None:
        self.live.add(link)
        link._done.add_done_callback(lambda _: self.live.discard(link))

    def report(self, peer: str, reason: str, data: bytes) -> None:
        log.error("nng rendezvous refused input from %s: %s", peer, reason)
        if self.on_bad is not None:
            self.on_bad(BadFrame(peer, reason, preview=data[:32].hex()))

    async def listen(self, address: str, accept: Callable[[Link], None]) -> LinkListener:
        return NngListener(self, address, accept)

    async def dial(self, address: str, timeout: float) -> Link:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        url = nng_url(self.scheme, address)
        reply = await self._rendezvous(url, deadline)
        if reply.startswith(REFUSED):
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"{url} refused the link: {reply[len(REFUSED) :].decode()}"
            )
        if not reply.startswith(ACCEPTED) or len(reply) <= len(ACCEPTED) + TOKEN:
            raise ConnectionRefusedError(
                errno.EPROTO, f"{url} is not a Synaptic Mesh NNG node (replied {reply[:16]!r})"
            )
        token = reply[len(ACCEPTED) : len(ACCEPTED) + TOKEN]
        where = reply[len(ACCEPTED) + TOKEN :].decode()
        if self.scheme == "tcp":
            host = address.rpartition(":")[0]
            link_url = f"tcp://{host}:{where}"
        else:
            link_url = f"ipc://{where}"
        sock = link_socket(self.limits)
        connected: list[int] = []
        up = asyncio.Event()

        def on_connect(pipe: pynng.Pipe) -> None:  # an NNG thread
            connected.append(pipe.id)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(up.set)

        sock.add_post_pipe_connect_cb(on_connect)
        try:
            sock.dial(link_url, block=False)
            async with asyncio.timeout_at(deadline):
                await up.wait()
            sock.send(token, block=False)
        except TimeoutError:
            sock.close()
            raise TimeoutError(f"link socket {link_url} of {url} did not connect") from None
        except pynng.NNGException as exc:
            sock.close()
            raise _os_error(exc, f"cannot link to {link_url}") from None
        link = NngLink(sock, connected[0], self.limits, f"nng link {url} -> {link_url} (dialed)")
        self.track(link)
        return link

    async def _rendezvous(self, url: str, deadline: float) -> bytes:
        req = pynng.Req0(recv_max_size=RENDEZVOUS_MAX)
        try:
            req.dial(url, block=False)  # NNG redials in the background until the deadline
            async with asyncio.timeout_at(deadline):
                await req.asend(REQUEST)
                return await req.arecv()
        except TimeoutError:
            raise TimeoutError(f"no NNG node answered at {url}") from None
        except pynng.NNGException as exc:
            raise _os_error(exc, f"cannot reach {url}") from None
        finally:
            req.close()


def _remote(message: pynng.Message) -> str:
    """Where a message came from, for logs and reports."""
    try:
        return str(message.pipe.remote_address) if message.pipe is not None else "unknown peer"
    except pynng.NNGException:
        return "unknown peer"


def _check_ipc_path(path: str) -> None:
    if len(os.fsencode(path)) > MAX_IPC_PATH:
        raise OSError(
            errno.ENAMETOOLONG,
            f"IPC path {path} (with a link suffix) is longer than {MAX_IPC_PATH} bytes",
        )


def _os_error(exc: pynng.NNGException, what: str) -> OSError:
    code = {
        pynng.AddressInUse: errno.EADDRINUSE,
        pynng.ConnectionRefused: errno.ECONNREFUSED,
    }.get(type(exc), errno.EIO)
    return OSError(code, f"{what}: {exc}")
