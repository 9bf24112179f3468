"""The cache port and its adapters (memory: in-process default; redis: shared, production)."""

from keel.core.cache.memory import MemoryCache
from keel.core.cache.near import NearCache
from keel.core.cache.port import Cache, Loader, SingleFlightCache
from keel.core.cache.redis import RedisCache, redis_client

__all__ = ["Cache", "Loader", "MemoryCache", "NearCache", "RedisCache", "SingleFlightCache", "redis_client"]
