"""Where the demo finds each service: one base URL under `keel up`, or one per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urljoin

from keel.demo.media import SOURCE_PORT


@dataclass(frozen=True)
class Targets:
    tickets: str
    orders: str
    videos: str
    orchestrator: str
    delivery: str
    # The Kafka-protocol brokers the platform consumes from; empty: flows that need a producer skip.
    brokers: list[str] = field(default_factory=list)
    # Without brokers: the embedded platform (`keel up`) whose /_dev/bus door publishes onto its memory bus.
    platform: str | None = None
    # Where the videos flow serves its own clip (127.0.0.1), for a platform in HLS_MODE=ffmpeg.
    video_source_port: int = SOURCE_PORT

    @classmethod
    def single(
        cls, base_url: str, brokers: list[str] | None = None, video_source_port: int = SOURCE_PORT
    ) -> Targets:
        base = base_url.rstrip("/")
        return cls(base, base, base, base, base, list(brokers or []), base, video_source_port)

    def url(self, service_base: str, path: str) -> str:
        """An absolute URL for a path (or a link a service answered, which may be relative)."""
        return urljoin(service_base.rstrip("/") + "/", path.lstrip("/")) if "://" not in path else path
