"""KafkaBus: producers, consumers and topic administration against a Kafka-protocol cluster, and
why its brokers stopped answering when a probe can tell."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from keel.core.bus.errors import BrokerUnavailable, BusError
from keel.core.bus.kafka.consumer import KafkaConsumer
from keel.core.bus.kafka.failures import NO_PRODUCER_ID, UNREACHABLE
from keel.core.bus.kafka.producer import KafkaProducer
from keel.core.bus.port import RebalanceListener
from keel.core.bus.refusal import refusal
from keel.core.bus.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger("keel.bus")

# How long the start-up diagnosis waits for each broker before calling it unreachable.
REFUSAL_PROBE_S = 5.0
DIAGNOSIS_EVERY_S = 10.0


def is_dead_letter_topic(topic: str) -> bool:
    """Every DLQ topic of Keel ends in `.dlq` (DESIGN.md's topic list)."""
    return topic.endswith(".dlq")


class KafkaBus:
    """Producers, consumers and topic administration against a Kafka-protocol cluster."""

    name = "kafka"

    def __init__(
        self,
        brokers: list[str],
        *,
        idempotence: bool = True,
        partitions: int = 6,
        client_id: str = "keel",
        linger_ms: int = 5,
        batch_bytes: int = 64 * 1024,
        fetch_max_wait_ms: int = 100,
        replication_factor: int = 1,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        timeout_s: float = 30.0,
        ping_timeout_s: float = 2.0,
        security: KafkaSecurity = PLAINTEXT,
        dlq_retention_ms: int | None = None,
    ) -> None:
        if not brokers:
            raise ValueError("KafkaBus needs at least one broker address")
        self.brokers = list(brokers)
        self.idempotence = idempotence
        self.partitions = partitions
        self.client_id = client_id
        self.linger_ms = linger_ms
        # A producer batch's size cap (aiokafka's and Java's default: 16 KiB). A producer has one
        # request in flight per broker, carrying one batch per partition: at 16 KiB a relay batch of
        # outbox rows took several round trips per partition, a larger cap fewer (bench/results/changes.md).
        self.batch_bytes = batch_bytes
        # How long the broker may hold a fetch that found nothing, should it not answer as soon as a
        # record comes. Each hop of a flow can wait this long on an idle platform: the cityguide flow
        # reached its first audio sooner below aiokafka's default (bench/results/changes.md).
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.replication_factor = replication_factor
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.timeout_s = timeout_s
        self.ping_timeout_s = ping_timeout_s
        # One TLS context for every client of this bus (building one reads the CA file).
        self.security = security
        self.client_options = security.client_options()
        # retention.ms of the dead-letter topics this bus creates (None: the broker's default).
        self.dlq_retention_ms = dlq_retention_ms
        self._known_topics: set[str] = set()
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = asyncio.Lock()
        self._live: set[KafkaProducer | KafkaConsumer] = set()
        # What this process's clients cannot do now, by client (`producer`, `consumer <group>`): the
        # broker may answer a ping and still refuse them (no producer id, a group it will not serve).
        self._failing: dict[str, str] = {}
        self._told: set[str] = set()
        # Why the brokers stopped answering, when a probe can tell (credentials revoked, a certificate
        # changed): looked for in the background after a failed ping, at most every DIAGNOSIS_EVERY_S,
        # so a readiness check never waits for it; the next failing check names it.
        self._diagnosis: str | None = None
        self._diagnosing: asyncio.Task[None] | None = None
        self._diagnosed_at = -DIAGNOSIS_EVERY_S

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self)

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceListener | None = None,
        on_revoke: RebalanceListener | None = None,
    ) -> KafkaConsumer:
        return KafkaConsumer(self, topics, group_id, on_assign=on_assign, on_revoke=on_revoke)

    async def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        missing = [t for t in dict.fromkeys(topics) if t not in self._known_topics]
        if not missing:
            return
        count = partitions or self.partitions
        try:
            async with asyncio.timeout(self.timeout_s):
                admin = await self._admin_client()
                response = await admin.create_topics(
                    [
                        NewTopic(t, count, self.replication_factor, topic_configs=self._configs(t))
                        for t in missing
                    ]
                )
        except UNREACHABLE as exc:
            raise BrokerUnavailable(f"cannot create topics {missing}: {exc!r}") from exc
        for result in response.topic_errors:
            topic, code = result[0], result[1]
            if code not in (0, TopicAlreadyExistsError.errno):
                raise BusError(f"cannot create topic {topic!r}: error {code} {result[2:]}")
        # CreateTopics returns once the controller has the topics; a broker serves them a moment
        # later. A consumer that subscribed before its broker knew a topic would wait for its next
        # metadata refresh (minutes): wait here until every partition has a leader.
        try:
            async with asyncio.timeout(self.timeout_s):
                while not await self._have_leaders(missing):  # noqa: ASYNC110 - polling the broker
                    await asyncio.sleep(0.05)
        except UNREACHABLE as exc:
            raise BrokerUnavailable(f"topics {missing} created but not served: {exc!r}") from exc
        self._known_topics.update(missing)

    def _configs(self, topic: str) -> dict[str, str]:
        if self.dlq_retention_ms is not None and is_dead_letter_topic(topic):
            return {"retention.ms": str(self.dlq_retention_ms)}
        return {}

    async def _have_leaders(self, topics: list[str]) -> bool:
        admin = await self._admin_client()
        described = await admin.describe_topics(topics)
        return len(described) == len(topics) and all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        )

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.ping_timeout_s):
                admin = await self._admin_client()
                await admin.describe_cluster()
        except UNREACHABLE as exc:
            self._diagnose()
            raise BrokerUnavailable(
                self._diagnosis or f"kafka {self.brokers} did not answer: {exc!r}"
            ) from exc
        self._diagnosis = None
        if self._failing:
            raise BrokerUnavailable("; ".join(f"{client}: {why}" for client, why in self._failing.items()))

    async def refusal(self) -> str | None:
        """Whether a broker refuses this client for a reason no retry fixes (credentials, TLS), in one
        line naming the setting; None when the brokers accept it or are only unreachable."""
        for address in self.brokers:
            if reason := await refusal(address, self.security, min(self.timeout_s, REFUSAL_PROBE_S)):
                return reason
        return None

    def _diagnose(self) -> None:
        if self._diagnosing is not None and not self._diagnosing.done():
            return
        if time.monotonic() - self._diagnosed_at < DIAGNOSIS_EVERY_S:
            return
        self._diagnosed_at = time.monotonic()

        async def probe() -> None:
            self._diagnosis = await self.refusal()

        self._diagnosing = asyncio.create_task(probe(), name="kafka-diagnosis")

    def report(self, client: str, failure: str | None) -> None:
        """Record what `client` cannot do (None: it works again). A diagnosis with a fix is logged
        once per process, in one line, rather than at every retry."""
        if failure is None:
            self._failing.pop(client, None)
            return
        self._failing[client] = failure
        if failure == NO_PRODUCER_ID and failure not in self._told:
            self._told.add(failure)
            log.error("kafka %s: %s", self.brokers, failure)

    async def close(self) -> None:
        if self._diagnosing is not None:
            self._diagnosing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._diagnosing
        for client in list(self._live):
            await client.stop()
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def admin_client(self) -> AIOKafkaAdminClient:
        """The bus's admin connection, for operator tools (keel.ops) that need more than the port."""
        return await self._admin_client()

    async def _admin_client(self) -> AIOKafkaAdminClient:
        """One admin connection, opened on first need and opened again after a failed start."""
        async with self._admin_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.brokers,
                    client_id=f"{self.client_id}-admin",
                    request_timeout_ms=int(self.timeout_s * 1000),
                    **self.client_options,
                )
                try:
                    await admin.start()
                except BaseException:
                    await admin.close()
                    raise
                self._admin = admin
            return self._admin

    async def start_client(self, client: AIOKafkaProducer | AIOKafkaConsumer, what: str) -> None:
        """Start an aiokafka client within `timeout_s`; stop it and raise BrokerUnavailable otherwise."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await client.start()
        except BaseException as exc:
            await client.stop()
            if isinstance(exc, UNREACHABLE):
                failure = BrokerUnavailable(f"{what} could not start against {self.brokers}: {exc!r}")
                self.report(what, str(failure))
                raise failure from exc
            raise
        self.report(what, None)

    def track(self, client: KafkaProducer | KafkaConsumer, live: bool) -> None:
        if live:
            self._live.add(client)
        else:
            self._live.discard(client)
