"""Object storage: one port (`ObjectStore`) with adapters on obstore — a local directory (the
default), an S3-compatible store (S3, MinIO) and memory — and download links that expire.

S3 links are real presigned GET URLs. A local directory cannot presign, so its links point at our
own route (`signed_files_router`) carrying an HMAC signature (keel.core.signing) that the route
verifies before streaming the file.
"""

from keel.core.storage.files_route import signed_files_router
from keel.core.storage.obstore_store import ObstoreObjectStore, build_object_store
from keel.core.storage.port import (
    DEFAULT_CONTENT_TYPE,
    InvalidObjectKey,
    ObjectNotFound,
    ObjectStore,
    StoredObject,
    check_key,
)

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "InvalidObjectKey",
    "ObjectNotFound",
    "ObjectStore",
    "ObstoreObjectStore",
    "StoredObject",
    "build_object_store",
    "check_key",
    "signed_files_router",
]
