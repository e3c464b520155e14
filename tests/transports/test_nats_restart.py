"""The broker goes away and comes back: a private ``nats-server`` killed and restarted.

Never the shared server: each test starts its own on a free port, with its
own JetStream store in a temporary directory (see ``test_nats_helpers``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from synaptic_mesh import PublishRefused
from synaptic_mesh.runtime import codec
from synaptic_mesh.runtime.envelope import Envelope
from synaptic_mesh.transports.nats import NatsTransport
from synaptic_mesh.transports.nats_js import NatsJsTransport
from tests.transports.test_nats_helpers import PrivateServer, private_server, until

COUNT = 3000
FAST = "reconnect_wait=0.05&connect_timeout=1&ping_interval=1"


def envelope(n: int) -> list[Any]:
    return codec.encode(Envelope(f"pub.{n}", "tell", "stream.items", n))


def received_ids(into: list[str]) -> Any:
    async def keep(subject: str, frames: Any, reply_to: str | None) -> None:
        into.append(codec.decode(frames).id)

    return keep


async def restart_when(server: PrivateServer, sent: list[int], at: int, down: float) -> None:
    while len(sent) < at:
        await asyncio.sleep(0.001)
    await server.kill()
    await asyncio.sleep(down)
    await server.start()


async def test_core_nats_counts_what_a_broker_restart_cost() -> None:
    async with private_server() as server:
        url = f"nats://{server.url}?{FAST}"
        publisher, subscriber = NatsTransport(url), NatsTransport(url)
        await publisher.start()
        await subscriber.start()
        try:
            got: list[str] = []
            await subscriber.subscribe("stream.items", received_ids(got), queue="sink")
            sent: list[int] = []
            refused = 0
            bouncer = asyncio.ensure_future(restart_when(server, sent, 1000, 0.3))
            for n in range(COUNT):
                try:
                    await publisher.publish("stream.items", envelope(n))
                except PublishRefused:
                    refused += 1
                sent.append(n)
                if n % 20 == 0:
                    await asyncio.sleep(0.001)  # spread the stream over the outage
            await bouncer
            await until(lambda: publisher.connected and subscriber.connected, timeout=20)
            # "connected" comes before the server has the resent subscription: a PING/PONG on
            # the subscriber's connection makes sure it has, or the last message could miss it
            await subscriber.client.flush(timeout=5)
            await publisher.publish("stream.items", envelope(COUNT))  # the last one, after
            await until(lambda: f"pub.{COUNT}" in got, timeout=20)
            stats = publisher.stats
            lost = COUNT - len(got) + 1 - refused
            print(
                f"core NATS restart: {COUNT} sent, {len(got) - 1} received, {refused} refused, "
                f"{lost} lost in flight, {stats.buffered} buffered while down; {stats}"
            )
            assert len(got) == len(set(got)), "core NATS never duplicates"
            assert stats.disconnects >= 1 and stats.reconnects >= 1
            assert subscriber.stats.reconnects >= 1
            assert stats.refused == refused
            assert lost >= 0 and stats.buffered > 0  # buffered while down, sent on reconnect
        finally:
            await subscriber.close()
            await publisher.close()


async def test_jetstream_loses_and_duplicates_nothing_across_a_broker_restart() -> None:
    async with private_server() as server:
        url = f"nats+js://{server.url}?{FAST}&durable=stream.>&ack_wait=2&publish_timeout=0.5"
        publisher, subscriber = NatsJsTransport(url), NatsJsTransport(url)
        await publisher.start()
        await subscriber.start()
        try:
            got: list[str] = []
            await subscriber.subscribe("stream.items", received_ids(got), queue="sink")
            sent: list[int] = []
            bouncer = asyncio.ensure_future(restart_when(server, sent, 1000, 0.5))
            for n in range(COUNT):
                await publisher.publish("stream.items", envelope(n))  # retries while down
                sent.append(n)
            await bouncer
            await until(lambda: len(set(got)) == COUNT, timeout=30)
            await asyncio.sleep(2.5)  # longer than ack_wait: a redelivery would show now
            print(f"JetStream restart: {publisher.stats}; {subscriber.stats}")
            assert sorted(got) == sorted(f"pub.{n}" for n in range(COUNT)), "each id exactly once"
            assert publisher.stats.disconnects >= 1 and publisher.stats.refused == 0
        finally:
            await subscriber.close()
            await publisher.close()


async def test_reconnect_buffer_is_bounded_and_refuses_with_a_clear_error(no_leaks: Any) -> None:
    async with private_server() as server:
        url = f"nats://{server.url}?{FAST}&buffer=4096"
        transport = NatsTransport(url)
        await transport.start()
        try:
            got: list[str] = []
            await transport.subscribe("stream.items", received_ids(got))
            await server.kill()
            await until(lambda: not transport.connected, timeout=20)
            accepted = 0
            with pytest.raises(PublishRefused, match="reconnect buffer \\(4096 bytes\\) is full"):
                for n in range(1000):
                    await transport.publish("stream.items", envelope(n))
                    accepted += 1
            assert 0 < accepted < 1000
            assert transport.stats.refused == 1 and transport.stats.buffered == accepted
            await server.start()
            await until(lambda: transport.connected, timeout=20)
            await transport.publish("stream.items", envelope(5000))  # the node went on
            await until(lambda: "pub.5000" in got, timeout=20)
            assert len(got) <= accepted + 1
        finally:
            await transport.close()
    await no_leaks()


async def test_jetstream_publish_gives_up_after_publish_retry() -> None:
    async with private_server() as server:
        url = (
            f"nats+js://{server.url}?{FAST}&durable=stream.>&publish_timeout=0.2&publish_retry=0.5"
        )
        transport = NatsJsTransport(url)
        await transport.start()
        try:
            await server.kill()
            with pytest.raises(PublishRefused, match=r"gave up after 0\.5 s"):
                await transport.publish("stream.items", envelope(1))
            assert transport.stats.refused == 1 and transport.stats.publish_retries >= 1
        finally:
            await transport.close()
