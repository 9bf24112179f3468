"""The production bus adapter: aiokafka behind the bus port, with bounded waits on a dead broker.

Every call that talks to the broker outside a consumer's own fetch loop (start, commit, lag, topic
creation, ping) is bounded, so a broker that is down or silent fails a call instead of hanging it.

    bus.py       KafkaBus: the clients' factory, topic administration, ping and the diagnosis
    producer.py  KafkaProducer: sends, acks and a producer abandoned when the broker stops acking
    batches.py   the record batches Keel builds per partition and hands to aiokafka in turn
    consumer.py  KafkaConsumer: a group member with manual commits, pause, seek and lag
    failures.py  what a dead broker and a refused producer id look like here
"""

from keel.core.bus.kafka.bus import KafkaBus, is_dead_letter_topic
from keel.core.bus.kafka.consumer import KafkaConsumer, message_of
from keel.core.bus.kafka.producer import KafkaProducer

__all__ = ["KafkaBus", "KafkaConsumer", "KafkaProducer", "is_dead_letter_topic", "message_of"]
