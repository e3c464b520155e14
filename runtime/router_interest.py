"""Interest bookkeeping of the subject router: who wants what, and who was told.

Interest is a set of keys ``(pattern, queue)``. Three things are tracked:

* ``local``: how many local subscriptions hold each key;
* each :class:`Peer`'s keys (counted over its links) and, in ``remote``, how
  many peers hold each key; a peer holding a key is one item in the router's
  :class:`SubjectTable` for that pattern and queue, whatever its count;
* per link, the keys advertised to it (``LinkState.sent``).

What a link is told follows the topology, as NATS routes (mesh) and chained
XPUB/XSUB proxies or NATS leaf nodes (tree) do it:

* mesh: only local interest. Every node hears every other directly, and a
  message is forwarded one hop, so re-advertising would only create loops.
* tree: local interest plus every other peer's interest, never a peer's own
  interest back to it (split horizon). On an acyclic graph this lets any node
  reach any subject through its neighbours, each hop forwarding only towards
  nodes that want it.

A branch's link to its parent may carry an export filter (``prefixes``): only
patterns contained in one of the prefixes, and reply inboxes (``_INBOX.>``),
are advertised up, so the parent routes just that part of the subject space
into the branch (the seed's root router dispatching by subject prefix).

Every change of a key re-evaluates, for each link, whether the link should
know it, and sends SUB or UNSUB on a transition only: O(links) per change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from synaptic_mesh.runtime import router_protocol as proto
from synaptic_mesh.runtime.router_link import Key, LinkState, Peer
from synaptic_mesh.runtime.subjects import FULL_WILDCARD, SINGLE_WILDCARD, SubjectTable

INBOX_ROOT = "_INBOX"
MAX_KEYS_PER_LINK = 100_000
"""Interest one link may advertise; a peer beyond it is broken or hostile."""


def pattern_within(pattern: str, prefix: str) -> bool:
    """Whether every subject matching ``pattern`` also matches ``prefix``.

    ``photogrammetry.mesh.*`` is within ``photogrammetry.>``; ``*.mesh`` is
    not (it also matches ``core.mesh``). Both arguments are valid patterns.
    """
    p, q = pattern.split("."), prefix.split(".")
    for i, token in enumerate(q):
        if token == FULL_WILDCARD:
            return len(p) > i
        if i >= len(p):
            return False
        if token == SINGLE_WILDCARD:
            if p[i] == FULL_WILDCARD:
                return False
        elif p[i] != token:
            return False
    return len(p) == len(q)


class Interest:
    """The interest state of one router (see module docstring)."""

    def __init__(self, table: SubjectTable, topology: str) -> None:
        self.table = table
        self.tree = topology == "tree"
        self.local: Counter[Key] = Counter()
        self.remote: Counter[Key] = Counter()
        self.links: list[LinkState] = []  # links that are up (snapshot sent)

    # -- what a link should know --------------------------------------------------

    def _wanted(self, state: LinkState, key: Key) -> bool:
        if state.exports is not None and not self._exported(key[0], state.exports):
            return False
        if self.local[key] > 0:
            return True
        if not self.tree:
            return False
        own = 1 if state.peer is not None and key in state.peer.keys else 0
        return self.remote[key] - own > 0

    @staticmethod
    def _exported(pattern: str, prefixes: tuple[str, ...]) -> bool:
        if pattern.split(".", 1)[0] == INBOX_ROOT:
            return True
        return any(pattern_within(pattern, prefix) for prefix in prefixes)

    def _update(self, state: LinkState, key: Key) -> bool:
        """Send SUB or UNSUB if what ``state`` knows of ``key`` must change; True if sent."""
        wanted = self._wanted(state, key)
        if wanted == (key in state.sent):
            return False
        if wanted:
            state.sent.add(key)
            state.send_control(proto.interest(proto.SUB, *key))
        else:
            state.sent.discard(key)
            state.send_control(proto.interest(proto.UNSUB, *key))
        return True

    def _changed(self, key: Key) -> bool:
        sent = False
        for state in self.links:
            sent = self._update(state, key) or sent
        return sent

    # -- links --------------------------------------------------------------------

    def attach(self, state: LinkState) -> None:
        """A link came up: advertise everything it should know."""
        self.links.append(state)
        keys: Iterable[Key] = self.local
        if self.tree:
            keys = set(self.local) | set(self.remote)
        for key in list(keys):
            self._update(state, key)

    def detach(self, state: LinkState) -> None:
        """A link went down: forget the interest it carried."""
        if state in self.links:
            self.links.remove(state)
        for key in list(state.got):
            self.peer_remove(state, key)
        state.sent.clear()

    # -- local subscriptions --------------------------------------------------------

    def local_add(self, key: Key) -> bool:
        """A local subscription on ``key``; True if any link was told (worth a flush)."""
        self.local[key] += 1
        return self.local[key] == 1 and self._changed(key)

    def local_remove(self, key: Key) -> None:
        self.local[key] -= 1
        if self.local[key] <= 0:
            del self.local[key]
            self._changed(key)

    # -- peer interest ----------------------------------------------------------------

    def peer_add(self, state: LinkState, key: Key) -> None:
        """The peer on ``state`` advertised ``key`` (a repeated SUB changes nothing)."""
        peer = state.peer
        assert peer is not None
        if key in state.got:
            return
        if len(state.got) >= MAX_KEYS_PER_LINK:
            raise proto.RouterProtocolError(
                f"peer advertised more than {MAX_KEYS_PER_LINK} subscriptions on one link"
            )
        state.got.add(key)
        count = peer.keys.get(key, 0)
        peer.keys[key] = count + 1
        if count == 0:
            self.table.add(key[0], peer, key[1])
            self.remote[key] += 1
            if self.tree:
                self._changed(key)

    def peer_remove(self, state: LinkState, key: Key) -> None:
        """The peer on ``state`` withdrew ``key`` (an unknown UNSUB changes nothing)."""
        peer = state.peer
        if peer is None or key not in state.got:
            return
        state.got.discard(key)
        count = peer.keys[key] - 1
        if count > 0:
            peer.keys[key] = count
            return
        del peer.keys[key]
        self.table.remove(key[0], peer, key[1])
        self.remote[key] -= 1
        if self.remote[key] <= 0:
            del self.remote[key]
        if self.tree:
            self._changed(key)

    def peer_keys(self, peer: Peer) -> list[Key]:
        """What ``peer`` currently wants (for tests and introspection)."""
        return sorted(peer.keys, key=lambda k: (k[0], k[1] or ""))
