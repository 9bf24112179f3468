"""Redis in its production topologies on loopback, from the same redis-server binary as the single
server: a primary with a replica watched by three Sentinels, and a three-master Cluster."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import redis

from tests.support import servers
from tests.support.eventually import eventually_sync

SERVICE = "keel-primary"
SLOTS = 16384


@dataclass
class SentinelGroup:
    primary: servers.ChildServer
    replica: servers.ChildServer
    sentinels: list[servers.ChildServer] = field(default_factory=list)
    password: str | None = field(default=None, repr=False)  # of the default user, nodes and Sentinels

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        credentials = f"default:{quote(self.password, safe='')}@" if self.password else ""
        return f"redis+sentinel://{credentials}{hosts}/{SERVICE}/0"

    def primary_port(self) -> int:
        """The port the Sentinels name as primary now."""
        sentinel = redis.Redis(port=self.sentinels[0].port, password=self.password, socket_timeout=2)
        try:
            _, port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
            return int(port)
        finally:
            sentinel.close()

    def by_port(self, port: int) -> servers.ChildServer:
        return next(s for s in (self.primary, self.replica) if s.port == port)


def _data_node(password: str | None) -> servers.ChildServer:
    node = servers.redis_server()
    # A replica's full sync (at start, and of a demoted primary after a failover) begins at once, not
    # after the default 5 s wait for more replicas to share it.
    node.argv += ["--repl-diskless-sync-delay", "0"]
    if password:
        # masterauth too: after a failover each node may be the other's replica.
        node.argv += ["--requirepass", password, "--masterauth", password]
    return node


def _replica_of(primary: servers.ChildServer, password: str | None) -> servers.ChildServer:
    replica = _data_node(password)
    replica.argv += ["--replicaof", "127.0.0.1", str(primary.port)]
    return replica


def _sentinel(primary_port: int, password: str | None) -> servers.ChildServer:
    server = servers.redis_server()
    # A Sentinel rewrites its configuration file as it learns the group: it needs one of its own.
    config = server.workdir / "sentinel.conf"
    config.write_text(
        f"port {server.port}\nbind 127.0.0.1\ndir {server.workdir}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
        # Seconds, not the default 30 s and 3 min: a killed primary is replaced while the test waits.
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 4000\n"
    )
    if password:
        # auth-pass to the data nodes; requirepass for clients, and to the other Sentinels.
        quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
        with config.open("a") as file:
            file.write(f"sentinel auth-pass {SERVICE} {quoted}\nrequirepass {quoted}\n")
    server.argv = [server.argv[0], str(config), "--sentinel"]
    return server


@contextlib.contextmanager
def sentinel_group(password: str | None = None) -> Iterator[SentinelGroup]:
    """A primary, its replica and three Sentinels; with `password`, every one of them requires it."""
    primary = _data_node(password)
    group = SentinelGroup(primary, _replica_of(primary, password), password=password)
    with contextlib.ExitStack() as stack:
        stack.enter_context(servers.running(primary))
        stack.enter_context(servers.running(group.replica))
        _wait_replicating(group.replica.port, password)
        for _ in range(3):
            group.sentinels.append(stack.enter_context(servers.running(_sentinel(primary.port, password))))
        _wait_sentinels_agree(group)
        yield group


def _wait_replicating(port: int, password: str | None, within_s: float = 15.0) -> None:
    client = redis.Redis(port=port, password=password, socket_timeout=2)
    try:
        eventually_sync(
            lambda: client.info("replication").get("master_link_status"),
            until=lambda status: status == "up",
            timeout_s=within_s,
            what=f"replica on {port} synced",
        )
    finally:
        client.close()


def _wait_sentinels_agree(group: SentinelGroup, within_s: float = 15.0) -> None:
    """Every Sentinel knows the others and the replica: a failover needs the quorum and a candidate."""
    for sentinel in group.sentinels:
        client = redis.Redis(port=sentinel.port, password=group.password, socket_timeout=2)
        try:
            eventually_sync(
                lambda client=client: client.sentinel_master(SERVICE),
                until=lambda m: int(m["num-other-sentinels"]) == 2 and int(m["num-slaves"]) == 1,
                timeout_s=within_s,
                what=f"sentinel {sentinel.port} knowing the group",
            )
        finally:
            client.close()


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[str]:
    """A Cluster of `masters` nodes sharing the slots evenly; yields its redis+cluster:// URL."""
    nodes = [servers.redis_server(_cluster_port()) for _ in range(masters)]
    for node in nodes:
        node.argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        # Redis's default: no failover is tested here, and a node starved of CPU on a loaded machine
        # for a shorter time must not be marked failed (the cluster would refuse commands).
        node.argv += ["--cluster-node-timeout", "15000"]
    with contextlib.ExitStack() as stack:
        for node in nodes:
            stack.enter_context(servers.running(node))
        clients = [redis.Redis(port=n.port, socket_timeout=2) for n in nodes]
        stack.callback(lambda: [c.close() for c in clients])
        share = SLOTS // masters
        for i, client in enumerate(clients):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
            client.execute_command("CLUSTER ADDSLOTSRANGE", i * share, last)
        joining = _Joining(clients, [n.port for n in nodes])
        eventually_sync(
            joining.probe,
            until=lambda states: all(state == ("ok", str(masters)) for state in states),
            timeout_s=30,
            interval_s=0.1,
            what="the cluster at cluster_state:ok, every node knowing every other",
        )
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)


def _cluster_port() -> int:
    """A port free together with its cluster bus port (port + 10000), both below the kernel's
    ephemeral range. A node whose bus port is taken aborts at start ("Failed listening on port …
    (cluster), aborting"), and every test of the module then fails in setup with a reset connection:
    a port from bind(0) is ephemeral, so its bus port was too, free to be handed to any other
    test's outgoing connection before the node bound it. Both ranges lie below `free_port`'s."""
    below = servers.FREE_PORTS.start - BUS_OFFSET
    while True:
        port = _PORTS.randrange(below - BUS_OFFSET, below)
        if _free(port) and _free(port + BUS_OFFSET):
            return port


BUS_OFFSET = 10_000  # Redis's default cluster bus port: the client port + 10000
_PORTS = random.SystemRandom()


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _Joining:
    """The first node meets the others, and meets again any it still does not know every few seconds,
    as `redis-cli --cluster create` does: a MEET whose handshake does not finish within the node
    timeout is dropped and never retried (CI saw a cluster that never formed in 30 s)."""

    MEET_AGAIN_S = 3.0

    def __init__(self, clients: list[redis.Redis], ports: list[int]) -> None:
        self.clients, self.ports = clients, ports
        self.met_at = -self.MEET_AGAIN_S

    def probe(self) -> list[tuple[str, str]]:
        """Each node's (cluster_state, cluster_known_nodes)."""
        if time.monotonic() - self.met_at >= self.MEET_AGAIN_S:
            # Keyed by "host:port" (or "host:port@bus"); a node in its handshake is known already.
            addresses = self.clients[0].execute_command("CLUSTER NODES")
            known = {address.split("@")[0].rpartition(":")[2] for address in addresses}
            for port in self.ports[1:]:
                if str(port) not in known:
                    self.clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
            self.met_at = time.monotonic()
        states = []
        for client in self.clients:
            fields = client.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
            states.append((str(fields.get("cluster_state")), str(fields.get("cluster_known_nodes"))))
        return states
