"""The event bus port, its wire formats and its adapters (memory, kafka)."""

from keel.core.bus.message import Message, OutgoingMessage, TopicPartition
from keel.core.bus.port import Bus, Consumer, Producer, RebalanceListener

__all__ = ["Bus", "Consumer", "Message", "OutgoingMessage", "Producer", "RebalanceListener", "TopicPartition"]
