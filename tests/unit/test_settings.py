from keel.core.settings import Settings


def test_seed_variable_names_are_read(monkeypatch):
    monkeypatch.setenv("KAFKA_BROKERS", "a:9092, b:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@h/db")
    monkeypatch.setenv("LINK_TTL_SEC", "60")
    settings = Settings(_env_file=None)
    assert settings.kafka_brokers == ["a:9092", "b:9092"]
    assert settings.postgres_dsn == "postgresql://x@h/db"
    assert settings.link_ttl_sec == 60
    assert settings.uses_kafka


def test_defaults_match_the_seeds(monkeypatch):
    for name in ("KAFKA_BROKERS", "POSTGRES_DSN", "DATABASE_URL", "SECRET", "LINK_TTL_SEC"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.secret == "secret"
    assert settings.link_ttl_sec == 3600
    assert settings.kafka_brokers == []
    assert not settings.uses_kafka
