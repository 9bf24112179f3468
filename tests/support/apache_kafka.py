"""Apache Kafka (KRaft, no ZooKeeper) for tests: one combined broker+controller, or a 3-node cluster.

The broker's jars come from Maven Central once: `mvn dependency:copy-dependencies` on the POM beside
this file, into a cache folder outside the clone (`~/.cache/keel/kafka-<version>/libs`, or under
KEEL_KAFKA_CACHE), so a fresh clone starts Kafka without fetching again. Each node runs in its own
JVM with a bounded heap, on free loopback ports, with its log under a temporary work dir.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import ChildServer, free_port, wait_for_port

HERE = Path(__file__).resolve().parent / "kafka"
POM = HERE / "pom.xml"
LOG_CONFIG = HERE / "log4j2.yaml"
HEAP = os.environ.get("KEEL_TEST_KAFKA_HEAP", "512m")
READY_S = 60.0


def version() -> str:
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    assert found, f"{POM} names no kafka.version"
    return found.group(1)


def cache_dir() -> Path:
    root = os.environ.get("KEEL_KAFKA_CACHE") or str(Path.home() / ".cache" / "keel")
    return Path(root) / f"kafka-{version()}"


def missing_tools() -> str | None:
    """Why Apache Kafka cannot run here (Java 17+ and Maven are needed), or None."""
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        return "Apache Kafka needs Java 17+ and Maven on PATH (Debian: apt-get install openjdk-17-jre-headless maven)"
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    major = re.search(r'version "(\d+)', out)
    if major is None or int(major.group(1)) < 17:
        return f"Apache Kafka {version()} needs Java 17+, found: {out.splitlines()[:1]}"
    return None


def classpath() -> str:
    """The broker's classpath, fetched with Maven on first use (one process fetches, the rest wait)."""
    libs = cache_dir() / "libs"
    done = libs / ".complete"
    if not done.exists():
        libs.parent.mkdir(parents=True, exist_ok=True)
        with open(libs.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                _fetch(libs)
    return f"{libs}/*"


def _fetch(libs: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    argv = ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime"]
    result = subprocess.run(
        [*argv, f"-DoutputDirectory={staging}"], capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"could not fetch Apache Kafka {version()} with Maven ({' '.join(argv)}): {tail}")
    (staging / ".complete").touch()
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)


REAUTH_MS = 3_000


def revoke_scram(bootstrap: str, user: str) -> None:
    """Deletes `user`'s SCRAM credentials, as an operator would with kafka-configs.sh (through the
    node's plaintext listener; one mechanism per call, as the tool takes them)."""
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        argv = [*_java(), "kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap, "--alter"]
        argv += ["--entity-type", "users", "--entity-name", user, "--delete-config", mechanism]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"kafka-configs failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")


@dataclass
class Scram:
    """A SASL_SSL listener whose users sign in with SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN, and a
    certificate the test made (PEM files); optionally an SSL listener that requires a client
    certificate signed by `client_ca`, one presenting a certificate for another name, and SASL
    without TLS."""

    port: int
    users: dict[str, str]
    certfile: Path  # the server's chain, PEM
    keyfile: Path  # its PKCS#8 key, PEM, unencrypted
    mtls_port: int | None = None
    client_ca: Path | None = None
    # An SSL listener presenting a certificate for another host name (key then chain, one PEM).
    misnamed_port: int | None = None
    misnamed_bundle: Path | None = None
    # SASL (SCRAM-SHA-512) without TLS.
    sasl_plaintext_port: int | None = None

    MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass
class KafkaNode(ChildServer):
    """One combined broker+controller. Its log dir outlives stop()/kill(), as a real broker's disk does."""

    node_id: int = 1
    controller_port: int = 0
    voters: str = ""
    cluster_id: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    scram: Scram | None = None

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        config = self.workdir / "server.properties"
        if not config.exists():
            config.write_text("".join(f"{k}={v}\n" for k, v in self.properties.items()))
            self._format(config)
        super().launch()

    def wait_ready(self) -> None:
        ports = [self.port]
        if self.scram is not None:
            # Every listener: the secured ones may open a moment after the plaintext one.
            scram = self.scram
            ports += [
                p for p in (scram.port, scram.mtls_port, scram.misnamed_port, scram.sasl_plaintext_port) if p
            ]
        try:
            for port in ports:
                wait_for_port(port, READY_S)
        except TimeoutError:
            log = (self.workdir / "server.log").read_text(errors="replace").splitlines()[-20:]
            raise TimeoutError(f"Kafka node {self.node_id} not listening on {self.port}: {log}") from None

    def _format(self, config: Path) -> None:
        argv = [*_java(), "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(config)]
        if self.scram is not None:
            for user, password in self.scram.users.items():
                for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                    argv += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _java() -> list[str]:
    return [
        "java",
        f"-Xmx{HEAP}",
        "-Xms64m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG_CONFIG}",
        "-cp",
        classpath(),
    ]


def _properties(
    node_id: int, port: int, advertised: int, controller_port: int, voters: str, size: int, workdir: Path
) -> dict[str, str]:
    replicas = min(3, size)
    isr = 2 if size >= 3 else 1
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{advertised}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "log.dirs": str(workdir / "data"),
        "num.partitions": "1",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(isr),
        "offsets.topic.replication.factor": str(replicas),
        # Few partitions for the internal topics: their leaders load in a fraction of the default 50's time.
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(isr),
        "transaction.state.log.num.partitions": "6",
        # Tests join groups all the time: no initial delay, and sessions as short as 0.5 s allowed.
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "500",
        # As production should run (docs/kafka.md): a topic Keel did not create fails loudly here too.
        "auto.create.topics.enable": "false",
        "unclean.leader.election.enable": "false",
        # A killed node's peers notice within seconds, and a restarted one rejoins the ISR as fast.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
        "replica.lag.time.max.ms": "5000",
        "controlled.shutdown.enable": "true",
        "log.flush.interval.messages": str(2**62),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(isr),
    }


def _with_scram(props: dict[str, str], scram: Scram) -> dict[str, str]:
    scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain_users = " ".join(f'user_{user}="{password}"' for user, password in scram.users.items())
    listeners = f"SASL_SSL://127.0.0.1:{scram.port}"
    secured = {
        **props,
        "sasl.enabled.mechanisms": ",".join(Scram.MECHANISMS),
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram_jaas,
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram_jaas,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(scram.keyfile.with_suffix(".bundle.pem")),
        "ssl.client.auth": "none",
        # Sessions re-authenticate this often (KIP-368, what hosted clusters enforce): a revoked user's
        # open connections end within it.
        "listener.name.sasl_ssl.connections.max.reauth.ms": str(REAUTH_MS),
    }
    # Further listeners, each its own protocol and settings: (name, protocol, port, listener settings).
    extra: list[tuple[str, str, int, dict[str, str]]] = []
    if scram.mtls_port is not None:
        assert scram.client_ca is not None
        trust = {"ssl.truststore.type": "PEM", "ssl.truststore.location": str(scram.client_ca)}
        extra.append(("SSL", "SSL", scram.mtls_port, {"ssl.client.auth": "required", **trust}))
    if scram.misnamed_port is not None:
        assert scram.misnamed_bundle is not None
        keystore = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(scram.misnamed_bundle)}
        extra.append(("MISNAMED", "SSL", scram.misnamed_port, keystore))
    if scram.sasl_plaintext_port is not None:
        sasl = {"sasl.enabled.mechanisms": "SCRAM-SHA-512", "scram-sha-512.sasl.jaas.config": scram_jaas}
        extra.append(("SASL_PLAINTEXT", "SASL_PLAINTEXT", scram.sasl_plaintext_port, sasl))
    protocols = props["listener.security.protocol.map"]
    for name, protocol, port, settings in extra:
        listeners += f",{name}://127.0.0.1:{port}"
        protocols += f",{name}:{protocol}"
        secured |= {f"listener.name.{name.lower()}.{key}": value for key, value in settings.items()}
    secured["listener.security.protocol.map"] = protocols
    return secured | {
        "listeners": f"{props['listeners']},{listeners}",
        "advertised.listeners": f"{props['advertised.listeners']},{listeners}",
    }


def node(
    *,
    port: int | None = None,
    advertised_port: int | None = None,
    scram: Scram | None = None,
) -> KafkaNode:
    """A single-node cluster (broker + controller in one JVM)."""
    port = port or free_port()
    controller_port = free_port()
    voters = f"1@127.0.0.1:{controller_port}"
    workdir = Path(tempfile.mkdtemp(prefix="keel-kafka-"))
    props = _properties(1, port, advertised_port or port, controller_port, voters, 1, workdir)
    if scram is not None:
        # Kafka's PEM keystore is one file: the private key, then the certificate chain.
        bundle = scram.keyfile.with_suffix(".bundle.pem")
        bundle.write_text(scram.keyfile.read_text() + scram.certfile.read_text())
        props = _with_scram(props, scram)
    cluster_id = _cluster_id()
    return KafkaNode(
        _broker_argv(workdir),
        port,
        workdir,
        node_id=1,
        controller_port=controller_port,
        voters=voters,
        cluster_id=cluster_id,
        properties=props,
        scram=scram,
        ready_s=READY_S,
    )


def _broker_argv(workdir: Path) -> list[str]:
    return [*_java(), "kafka.Kafka", str(workdir / "server.properties")]


def _cluster_id() -> str:
    """16 random bytes, base64url without padding, as `random-uuid` prints them; like Kafka's own,
    never starting with '-' (the storage tool would read it as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaCluster:
    """Three combined broker+controller nodes: replication factor 3, min.insync.replicas 2."""

    nodes: list[KafkaNode]

    @property
    def bootstrap(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self) -> None:
        # Every node waits for a controller quorum before it listens: launch all, then wait.
        for n in self.nodes:
            n.launch()
        for n in self.nodes:
            n.wait_ready()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def by_id(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)


def cluster(size: int = 3) -> KafkaCluster:
    ports = [(free_port(), free_port()) for _ in range(size)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
    cluster_id = _cluster_id()
    nodes = []
    for i, (port, controller_port) in enumerate(ports):
        workdir = Path(tempfile.mkdtemp(prefix=f"keel-kafka-{i + 1}-"))
        props = _properties(i + 1, port, port, controller_port, voters, size, workdir)
        nodes.append(
            KafkaNode(
                _broker_argv(workdir),
                port,
                workdir,
                node_id=i + 1,
                controller_port=controller_port,
                voters=voters,
                cluster_id=cluster_id,
                properties=props,
                ready_s=READY_S,
            )
        )
    return KafkaCluster(nodes)


@contextlib.contextmanager
def running_cluster(size: int = 3) -> Iterator[KafkaCluster]:
    started = time.monotonic()
    c = cluster(size)
    try:
        c.start()
        print(f"\nApache Kafka {version()}: {size}-node cluster up in {time.monotonic() - started:.1f}s")
        yield c
    finally:
        stop_cluster(c)


def stop_cluster(c: KafkaCluster) -> None:
    """Its data is thrown away: kill -9 rather than a controlled shutdown, which took ~13 s per
    cluster (each broker in turn waits for the others to take over its partitions). Idempotent."""
    for n in c.nodes:
        n.kill()
        shutil.rmtree(n.workdir, ignore_errors=True)
