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


def test_a_rotated_secret_keeps_verifying_links_signed_with_the_previous_one(monkeypatch):
    from keel.core.bus.memory import MemoryBus
    from keel.core.infra import Infra
    from keel.core.signing import VerifyResult

    monkeypatch.setenv("SECRET", "old-secret")
    old = Infra(settings=Settings(_env_file=None), bus=MemoryBus()).signer.sign("/cdn/audio/1", 600)
    monkeypatch.setenv("SECRET", "new-secret")
    monkeypatch.setenv("SECRET_KEY_ID", "k2")
    monkeypatch.setenv("PREVIOUS_SECRETS", "k1:old-secret")
    rotated = Infra(settings=Settings(_env_file=None), bus=MemoryBus()).signer
    assert rotated.verify(old.path, old.exp, old.sig, old.kid) is VerifyResult.OK
    fresh = rotated.sign("/cdn/audio/1", 600)
    assert fresh.kid == "k2"
    monkeypatch.setenv("PREVIOUS_SECRETS", "")
    retired = Infra(settings=Settings(_env_file=None), bus=MemoryBus()).signer
    assert retired.verify(old.path, old.exp, old.sig, old.kid) is VerifyResult.BAD_SIGNATURE
