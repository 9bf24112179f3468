"""docs/asyncapi.yaml against the code: the same topics, wire formats, consumer groups, keys, DLQs and
payload fields as the services declare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from keel import services
from keel.cityguide import topics as cityguide
from keel.cityguide.delivery import spec as delivery_spec
from keel.cityguide.orchestrator import spec as orchestrator_spec
from keel.cityguide.story import spec as story_spec
from keel.cityguide.tts import spec as tts_spec
from keel.tickets import spec as tickets_spec
from keel.tickets.schemas import TicketEvents
from keel.videos.schemas import VideoEvents
from keel.videos.settings import VideoSettings

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"

# Defaults of the settings that name topics and groups (the environment may override them at run time).
VIDEOS_TOPIC = VideoSettings.model_fields["topic"].default
VIDEOS_DLQ = VideoSettings.model_fields["dlq_topic"].default
VIDEOS_GROUP = VideoSettings.model_fields["group_id"].default
CITYGUIDE_TOPICS = {
    cityguide.ROUTE_CONFIRMED,
    cityguide.STORY_GENERATE,
    cityguide.STORY_GENERATED,
    cityguide.TTS_REQUESTED,
    cityguide.TTS_COMPLETED,
    cityguide.DELIVERY_PREFETCH,
}


def _orders() -> tuple[str, str, Any]:
    """The order service's topic, group and wire models; imported here, not at module level, so that
    a build without the service fails these tests rather than the collection of the whole suite."""
    from keel.orders import schemas
    from keel.orders.settings import OrderSettings

    fields = OrderSettings.model_fields
    return str(fields["kafka_topic"].default), str(fields["kafka_group_id"].default), schemas


def _consumers() -> set[tuple[str, str, str]]:
    """Who consumes what, from the services' own constants: (service, group, topic)."""
    orders_topic, orders_group, _ = _orders()
    return {
        ("tickets", tickets_spec.NOTIFICATIONS_GROUP, TicketEvents.TOPIC),
        ("orders", orders_group, orders_topic),
        ("videos", VIDEOS_GROUP, VIDEOS_TOPIC),
        *(
            ("orchestrator", f"{orchestrator_spec.GROUP}.{t}", t)
            for t in (cityguide.ROUTE_CONFIRMED, cityguide.STORY_GENERATED, cityguide.TTS_COMPLETED)
        ),
        ("delivery-prefetch", delivery_spec.GROUP, cityguide.TTS_COMPLETED),
        ("story", story_spec.GROUP, cityguide.STORY_GENERATE),
        ("tts", tts_spec.GROUP, cityguide.TTS_REQUESTED),
    }


def _dlq_of() -> dict[str, str]:
    orders_topic = _orders()[0]
    return {
        TicketEvents.TOPIC: TicketEvents.DLQ,
        orders_topic: f"{orders_topic}.dlq",
        VIDEOS_TOPIC: VIDEOS_DLQ,
        **dict.fromkeys(CITYGUIDE_TOPICS - {cityguide.DELIVERY_PREFETCH}, cityguide.DLQ),
    }


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Any]:
    data = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))
    assert data["asyncapi"].startswith("3.")
    return data


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _channels(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Channels by topic."""
    return {ch["address"]: ch for ch in doc["channels"].values()}


def _topic_of(doc: dict[str, Any], operation: dict[str, Any]) -> str:
    return str(_resolve(doc, operation["channel"]["$ref"])["address"])


def _code_topics() -> set[str]:
    declared = {t for spec in services.load_all() for t in spec.topics}
    # orders names its topics from settings at wiring time (KAFKA_TOPIC and `<topic>.dlq`).
    orders_topic = _orders()[0]
    return declared | {orders_topic, f"{orders_topic}.dlq"}


def test_the_catalogue_and_the_code_name_the_same_topics(catalogue: dict[str, Any]) -> None:
    assert set(_channels(catalogue)) == _code_topics()
    assert set(services.available()) == set(services.NAMES), "a service is missing from the build"


def test_every_ref_resolves(catalogue: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                _resolve(catalogue, node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(catalogue)


def test_every_consumer_group_in_the_code_is_in_the_catalogue_and_nothing_else(
    catalogue: dict[str, Any],
) -> None:
    documented = {
        (op["x-service"], op["bindings"]["kafka"]["groupId"]["const"], _topic_of(catalogue, op))
        for op in catalogue["operations"].values()
        if op["action"] == "receive" and op["x-service"] in services.NAMES
    }
    assert documented == _consumers()


def test_every_topic_has_a_producer_and_every_non_dlq_topic_a_reader(catalogue: dict[str, Any]) -> None:
    senders: dict[str, set[str]] = {}
    readers: dict[str, set[str]] = {}
    for op in catalogue["operations"].values():
        who = op["x-service"] if isinstance(op["x-service"], list) else [op["x-service"]]
        assert set(who) <= {*services.NAMES, "outside", "clients"}, who
        bucket = senders if op["action"] == "send" else readers
        bucket.setdefault(_topic_of(catalogue, op), set()).update(who)
        if op["action"] == "send":
            assert op["x-via"] in {"outbox", "direct"}
    channels = _channels(catalogue)
    assert set(senders) == set(channels)
    dlqs = set(_dlq_of().values())
    assert set(readers) == set(channels) - dlqs
    # The services that write through the outbox are the ones that have one.
    outbox = {
        s for op in catalogue["operations"].values() if op.get("x-via") == "outbox" for s in [op["x-service"]]
    }
    assert outbox == {n for n in services.NAMES if services.load(n).uses_outbox}
    # Every cityguide consumer dead-letters to cityguide.dlq.
    assert senders[cityguide.DLQ] == {s for s, _, t in _consumers() if t in CITYGUIDE_TOPICS}


def test_wire_format_and_dead_letter_topic_match_the_code(catalogue: dict[str, Any]) -> None:
    channels = _channels(catalogue)
    dlq_of = _dlq_of()
    envelope = {TicketEvents.TOPIC, VIDEOS_TOPIC}
    assert cityguide.WIRE == "bare"
    for topic, channel in channels.items():
        if topic in dlq_of.values():
            assert channel["x-wire"] == "dead-letter", topic
            assert "deadLetter" in channel["messages"], topic
        else:
            assert channel["x-wire"] == ("envelope" if topic in envelope else "bare"), topic
            assert channel.get("x-dlq") == dlq_of.get(topic), topic
            assert channel["x-key"], topic
    assert channels[cityguide.TTS_COMPLETED]["x-key"].startswith("audio_id")
    assert channels[cityguide.TTS_REQUESTED]["x-key"] == "story_id"
    assert channels[_orders()[0]]["x-key"] == "order_uid"


def test_event_types_match_the_code(catalogue: dict[str, Any]) -> None:
    channels = _channels(catalogue)

    def names(topic: str) -> set[str]:
        return {_resolve(catalogue, m["$ref"])["name"] for m in channels[topic]["messages"].values()}

    assert names(TicketEvents.TOPIC) == {TicketEvents.CREATED, TicketEvents.CLOSED}
    assert names(VIDEOS_TOPIC) == {VideoEvents.UPLOADED}
    orders_topic, _, order_schemas = _orders()
    assert names(orders_topic) == {order_schemas.ORDER_EVENT}
    # A bare cityguide message's default event type is its topic.
    for topic in CITYGUIDE_TOPICS:
        assert names(topic) == {topic}


def test_dead_letter_headers_are_the_ones_the_consumer_writes(catalogue: dict[str, Any]) -> None:
    from keel.core.consumer import dlq

    source = Path(dlq.__file__).read_text(encoding="utf-8")
    documented = catalogue["components"]["messages"]["deadLetter"]["headers"]["required"]
    assert documented, "no dlq headers documented"
    for header in documented:
        assert f'"{header}"' in source, header
    assert source.count('("dlq-') == len(documented)


@pytest.mark.parametrize(
    ("model_name", "schema"),
    [("Order", "order"), ("Delivery", "delivery"), ("Payment", "payment"), ("Item", "item")],
)
def test_the_order_payload_is_the_model_the_service_validates(
    catalogue: dict[str, Any], model_name: str, schema: str
) -> None:
    model = getattr(_orders()[2], model_name)
    documented = catalogue["components"]["schemas"][schema]
    code = TypeAdapter(model).json_schema()
    assert set(documented["properties"]) == set(code["properties"])
    assert set(documented["required"]) == set(code["required"])
    assert documented["additionalProperties"] is code.get("additionalProperties", True) is False
    # Every bound the service enforces is in the document: a producer that follows it is not
    # dead-lettered for a length, a pattern or a range it could not have known.
    bounds = ("type", "minLength", "maxLength", "pattern", "minimum", "maximum", "minItems", "maxItems")
    differing = {
        name: ({k: spec.get(k) for k in bounds}, {k: documented["properties"][name].get(k) for k in bounds})
        for name, spec in code["properties"].items()
        if "$ref" not in spec
        and "items" not in spec
        and {k: spec.get(k) for k in bounds} != {k: documented["properties"][name].get(k) for k in bounds}
    }
    assert differing == {}, "code, document"


def test_the_console_marks_every_dead_letter_topic_with_its_own_group_and_replays_with_these_headers(
    catalogue: dict[str, Any],
) -> None:
    from keel.ops import records
    from keel.ops.catalog import dead_letter_topics
    from keel.ops.dlq import mark_group

    dlqs = set(_dlq_of().values())
    marked = {
        address: channel["x-marked-by"]
        for address, channel in _channels(catalogue).items()
        if "x-marked-by" in channel
    }
    assert set(marked) == dlqs == set(dead_letter_topics())
    assert marked == {dlq: {"service": "console", "groupId": mark_group(dlq)} for dlq in dlqs}
    replayed = catalogue["components"]["messages"]["replayed"]["headers"]
    assert set(replayed["required"]) == {records.REPLAYED_FROM, records.REPLAY_COUNT, records.FIRST_FAILED_AT}


def test_the_compose_server_is_the_compose_files_broker(catalogue: dict[str, Any]) -> None:
    compose = yaml.safe_load((CATALOGUE.parents[1] / "deploy" / "docker-compose.yml").read_text())
    host, _, port = catalogue["servers"]["compose"]["host"].partition(":")
    assert host in compose["services"], f"no {host} service in deploy/docker-compose.yml"
    assert f"{host}:{port}" in str(compose["services"]["tickets"]["environment"]), (
        "the services' KAFKA_BROKERS"
    )


def test_no_mapping_holds_a_key_without_a_value(catalogue: dict[str, Any]) -> None:
    """A comma inside an unquoted flow-mapping value (`{description: a, b}`) makes a stray key `b: null`."""
    strays: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if value is None and key not in ("default", "const", "example"):
                    strays.append(f"{path}/{key}")
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for n, value in enumerate(node):
                walk(value, f"{path}/{n}")

    walk(catalogue, "#")
    assert strays == []
