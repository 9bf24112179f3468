"""Typed settings read from the environment and `.env`, under the seeds' variable names."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keel.core.bus.security import KafkaSecurity
from keel.core.redis_topology import RedisTopology
from keel.core.telemetry import SamplerName

DEFAULT_SECRET = "secret"  # noqa: S105 - the seed's documented default; refused by `keel serve`/`worker`
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    """What every service reads. Services subclass it to add their own fields."""

    # hide_input_in_errors: a bad value (e.g. PREVIOUS_SECRETS) must not print the secrets it holds.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    # PG_URL is the orders seed's name for the same DSN.
    # repr=False on everything that may carry a password or key: settings get logged and printed.
    postgres_dsn: str | None = Field(
        default=None, validation_alias=AliasChoices("POSTGRES_DSN", "DATABASE_URL", "PG_URL"), repr=False
    )
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL", repr=False)
    kafka_brokers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="KAFKA_BROKERS"
    )
    # The test broker's memory store refuses the idempotent producer; production keeps it on.
    kafka_idempotence: bool = Field(default=True, validation_alias="KAFKA_IDEMPOTENCE")
    kafka_partitions: int = Field(default=6, ge=1, validation_alias="KAFKA_PARTITIONS")
    # For topics the bus creates; a production cluster of three brokers wants 3.
    kafka_replication_factor: int = Field(default=1, ge=1, validation_alias="KAFKA_REPLICATION_FACTOR")
    # The longest any broker call may wait (start, acks of a send, commit, topic creation): past it
    # the call fails and the caller retries (an outbox row stays unpublished until acknowledged).
    kafka_timeout_s: float = Field(default=30.0, gt=0, validation_alias="KAFKA_TIMEOUT_S")
    # Dead-letter topics (`*.dlq`) outlive the default 7 days: an operator must find a dead letter
    # after a long weekend and a holiday (keel dlq, docs/operations.md). Applies when the bus creates one.
    dlq_retention_days: int = Field(default=30, ge=1, validation_alias="DLQ_RETENTION_DAYS")
    # Hosted Kafka (MSK, Confluent Cloud, Aiven, ...): TLS and SASL for every client (docs/kafka.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, validation_alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(default=None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: str | None = Field(default=None, validation_alias="KAFKA_SASL_PASSWORD", repr=False)
    kafka_ssl_cafile: str | None = Field(default=None, validation_alias="KAFKA_SSL_CAFILE")
    kafka_ssl_certfile: str | None = Field(default=None, validation_alias="KAFKA_SSL_CERTFILE")
    kafka_ssl_keyfile: str | None = Field(default=None, validation_alias="KAFKA_SSL_KEYFILE")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    # The standard sampler variables; unset, `keel serve`/`keel worker` keep 10 % of the traces they
    # start (parent-based) and `keel up` keeps all (docs/observability.md).
    otel_traces_sampler: SamplerName | None = Field(default=None, validation_alias="OTEL_TRACES_SAMPLER")
    otel_traces_sampler_arg: float | None = Field(
        default=None, ge=0, le=1, validation_alias="OTEL_TRACES_SAMPLER_ARG"
    )
    # asyncpg and Redis client spans under Keel's spans, when tracing is on.
    otel_client_spans: bool = Field(default=True, validation_alias="OTEL_CLIENT_SPANS")
    # One line per request (method, route template, status, duration, request and trace ids).
    access_log: bool = Field(default=True, validation_alias="ACCESS_LOG")

    data_dir: Path = Field(default=Path(".keel"), validation_alias="KEEL_DATA_DIR")
    request_timeout_s: float = Field(default=5.0, gt=0, validation_alias="REQUEST_TIMEOUT_S")
    max_body_bytes: int = Field(default=1_000_000, gt=0, validation_alias="MAX_BODY_BYTES")
    # The most connections a process opens (lazily, kept, no overflow): its expected concurrency.
    # Mind PostgreSQL's max_connections (100 by default) across processes.
    db_pool_size: int = Field(default=32, ge=1, validation_alias="DB_POOL_SIZE")
    db_connect_timeout_s: float = Field(default=2.0, gt=0, validation_alias="DB_CONNECT_TIMEOUT_S")
    # `pgbouncer`: POSTGRES_DSN goes through a pooler in transaction mode, where each transaction may
    # run on another server connection: no prepared statement is kept from one to the next, and no
    # LISTEN goes through it (docs/production.md).
    db_pooler: Literal["none", "pgbouncer"] = Field(default="none", validation_alias="DB_POOLER")
    # A direct (unpooled) DSN for the LISTEN connections, which need a session of their own. Unset:
    # POSTGRES_DSN when DB_POOLER=none; no LISTEN at all behind a pooler (the outbox relay polls and
    # the order cache stays off).
    postgres_listen_dsn: str | None = Field(default=None, validation_alias="POSTGRES_LISTEN_DSN", repr=False)
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    # Migrations at start: unset, `keel up` and a process on the embedded PostgreSQL migrate, and
    # `keel serve`/`keel worker` against POSTGRES_DSN only check the database is current (run
    # `keel migrate` once per release first); true or false decides for every command.
    migrate_on_start: bool | None = Field(default=None, validation_alias="MIGRATE_ON_START")

    secret: str = Field(default=DEFAULT_SECRET, validation_alias="SECRET", repr=False)
    # Lets `keel serve`/`keel worker` start with the default SECRET (an experiment; warned at start).
    insecure_defaults: bool = Field(default=False, validation_alias="KEEL_INSECURE_DEFAULTS")
    link_ttl_sec: int = Field(default=3600, gt=0, validation_alias="LINK_TTL_SEC")
    # Rotation: new links are signed with SECRET under SECRET_KEY_ID; links signed with an older secret
    # keep verifying while it is listed in PREVIOUS_SECRETS as `kid:secret,kid:secret`.
    secret_key_id: str = Field(default="k1", validation_alias="SECRET_KEY_ID")
    previous_secrets: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias="PREVIOUS_SECRETS", repr=False
    )
    # Failed signed-link checks allowed per client address and process (`limits` notation; empty = off):
    # what keeps guessing a 48-bit signature online hopeless (docs/cdn-signed-links.md).
    link_failure_limit: str = Field(default="30/minute", validation_alias="LINK_FAILURE_LIMIT")
    # A connection whose request head (request line + headers) is not complete within this is closed:
    # Without it a slowloris client holds connections open forever. An idle kept-alive connection is
    # closed after it too.
    http_header_timeout_s: float = Field(default=10.0, gt=0, validation_alias="HTTP_HEADER_TIMEOUT_S")
    # The largest request head (request line + headers) read; a longer one gets 431 and the connection
    # is closed, so a client cannot make the server buffer an endless header line. The server's read
    # buffer cannot be smaller than 8 KiB.
    max_header_bytes: int = Field(default=16 * 1024, ge=8192, validation_alias="MAX_HEADER_BYTES")
    # Peers (CIDRs, comma-separated) whose X-Forwarded-For / X-Forwarded-Proto are believed: the proxies
    # in front of Keel. Empty (default): nobody's, the client is the TCP peer. Every per-client limit
    # keys on the address this yields.
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list, validation_alias="TRUSTED_PROXIES"
    )
    # Who the caller is (docs/security.md): `header` trusts X-User-Id (and X-User-Roles from
    # TRUSTED_PROXIES only), `jwt` verifies `Authorization: Bearer` tokens with one key source below.
    auth_mode: Literal["header", "jwt"] = Field(default="header", validation_alias="AUTH_MODE")
    auth_jwt_jwks_url: str | None = Field(default=None, validation_alias="AUTH_JWT_JWKS_URL")
    auth_jwt_public_key: str | None = Field(default=None, validation_alias="AUTH_JWT_PUBLIC_KEY")
    auth_jwt_secret: str | None = Field(default=None, validation_alias="AUTH_JWT_SECRET", repr=False)
    auth_jwt_issuer: str | None = Field(default=None, validation_alias="AUTH_JWT_ISSUER")
    auth_jwt_audience: str | None = Field(default=None, validation_alias="AUTH_JWT_AUDIENCE")
    auth_jwt_leeway_s: float = Field(default=30.0, ge=0, le=300, validation_alias="AUTH_JWT_LEEWAY_S")
    auth_jwt_user_claim: str = Field(default="sub", min_length=1, validation_alias="AUTH_JWT_USER_CLAIM")
    auth_jwt_roles_claim: str = Field(default="roles", min_length=1, validation_alias="AUTH_JWT_ROLES_CLAIM")
    # A verified token is remembered (by its SHA-256) this long at most, and never past its `exp`.
    auth_jwt_cache_s: float = Field(default=60.0, ge=0, validation_alias="AUTH_JWT_CACHE_S")
    # Opens `keel up`'s dev bus door (POST /_dev/bus/{topic}) although it binds a non-loopback address.
    dev_door: bool = Field(default=False, validation_alias="KEEL_DEV_DOOR")

    # Rows a relay claims and publishes a batch: a batch's fixed costs (the claim, the broker's ack, the
    # delete) are shared by more rows; beyond this the relay gained nothing (bench/results/changes.md).
    outbox_batch_size: int = Field(default=1_000, ge=1, validation_alias="OUTBOX_BATCH_SIZE")
    outbox_poll_interval_s: float = Field(default=0.05, gt=0, validation_alias="OUTBOX_POLL_INTERVAL_S")
    # A relay that has drained the backlog waits this long before its next claim, so rows gather into
    # batches (latency for fewer transactions per event, like a producer's linger); 0 chases each commit.
    outbox_linger_s: float = Field(default=0.0, ge=0, validation_alias="OUTBOX_LINGER_S")
    outbox_shards: int = Field(default=16, ge=1, validation_alias="OUTBOX_SHARDS")
    # Handled-event ids are kept at least as long as a broker could redeliver them (Kafka: 7 days).
    inbox_retention_s: float = Field(default=7 * 24 * 3600, gt=0, validation_alias="INBOX_RETENTION_S")
    consumer_max_attempts: int = Field(default=5, ge=1, validation_alias="CONSUMER_MAX_ATTEMPTS")
    consumer_backoff_base_s: float = Field(default=0.2, gt=0, validation_alias="CONSUMER_BACKOFF_BASE_S")
    consumer_backoff_max_s: float = Field(default=10.0, gt=0, validation_alias="CONSUMER_BACKOFF_MAX_S")

    # Object storage: a local directory unless an S3-compatible endpoint (MinIO) is configured.
    object_store_dir: Path | None = Field(default=None, validation_alias="OBJECT_STORE_DIR")
    s3_endpoint_url: str | None = Field(default=None, validation_alias="S3_ENDPOINT_URL")
    s3_bucket: str | None = Field(default=None, validation_alias="S3_BUCKET")
    s3_access_key_id: str | None = Field(default=None, validation_alias="S3_ACCESS_KEY_ID")
    s3_secret_access_key: str | None = Field(
        default=None, validation_alias="S3_SECRET_ACCESS_KEY", repr=False
    )
    s3_region: str = Field(default="us-east-1", validation_alias="S3_REGION")
    # Where this deployment is reachable, for links it signs itself (local files); "" = relative links.
    public_base_url: str = Field(default="", validation_alias="PUBLIC_BASE_URL")

    @field_validator("previous_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            if any(":" not in p for p in pairs):
                raise ValueError("PREVIOUS_SECRETS is a comma-separated list of kid:secret")
            return dict(p.split(":", 1) for p in pairs)
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return [ipaddress.ip_network(n.strip(), strict=False) for n in value.split(",") if n.strip()]
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXIES is a comma-separated list of CIDRs: {exc}") from None
        return value

    @field_validator("kafka_brokers", mode="before")
    @classmethod
    def _split_brokers(cls, value: object) -> object:
        if isinstance(value, str):
            return [b.strip() for b in value.split(",") if b.strip()]
        return value

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, value: str | None) -> str | None:
        if value:
            url = urlsplit(value)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(
                    "must be the http:// or https:// URL of an OTLP/HTTP receiver (collector:4318)"
                )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value:
            RedisTopology.parse(value)  # an unknown scheme or a Sentinel URL without its service fails here
        return value

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        self.kafka_security()  # a half-set TLS/SASL configuration fails at start, naming what is missing
        return self

    def kafka_security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password,
            cafile=self.kafka_ssl_cafile,
            certfile=self.kafka_ssl_certfile,
            keyfile=self.kafka_ssl_keyfile,
        )

    @property
    def uses_kafka(self) -> bool:
        return bool(self.kafka_brokers)


def invalid_settings(exc: ValidationError) -> list[str]:
    """One line per bad setting, naming the variable that sets it (the values are left out: they may
    be secrets)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        where = f"{name}: " if name else ""
        hint = f"; set {name} in the environment or .env" if name else ""
        lines.append(f"invalid setting {where}{message}{hint}")
    return lines
