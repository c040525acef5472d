"""The cluster mode's object store for sealed bytes: any S3-compatible service (tested against
OpenStack Swift's S3 API), through boto3.

Keys are ``<unit>/<camera>/<sequence:012d>-<sha256>.seg``: the content's hash is in the key,
so a key is only ever written with the same bytes and no upload can replace another's (S3
conditional PUTs are not available everywhere: Swift answers ``NotImplemented``). Which key a
sequence holds is decided by the database (:mod:`.pgindex`). Every upload is checked: the
store's ETag of a single-part PUT is the MD5 of what it received, compared with ours.
Thread-safe: boto3 clients may be shared between threads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from ...errors import StorageUnavailableError

#: The object store is unreachable or refused a request (the receiver answers 503).
ObjectStoreError = StorageUnavailableError


def segment_key(unit: str, camera: str, sequence: int, sha256_hex: str) -> str:
    return f"{unit}/{camera}/{sequence:012d}-{sha256_hex}.seg"


class ObjectStore:
    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_file: Path,
        *,
        timeout_s: float,
        ca_file: Path | None = None,
    ) -> None:
        self.bucket = bucket
        try:
            secret = secret_file.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ObjectStoreError(f"{secret_file}: cannot read the secret key ({exc})") from None
        self._s3: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            verify=str(ca_file) if ca_file is not None else True,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def _call(self, what: str, method: str, **kw: Any) -> Any:
        try:
            return getattr(self._s3, method)(Bucket=self.bucket, **kw)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise ObjectStoreError(f"object store: {what}: {exc}") from None

    def ensure_bucket(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:
            self._call("create bucket", "create_bucket")
        except botocore.exceptions.BotoCoreError as exc:
            raise ObjectStoreError(f"object store: {exc}") from None

    def check_bucket(self) -> None:
        """The bucket exists and these credentials reach it (the receiver's start)."""
        self._call("head bucket", "head_bucket")

    def put(self, key: str, data: bytes) -> None:
        answer = self._call(f"put {key}", "put_object", Key=key, Body=data)
        if answer.get("ETag", "").strip('"') != hashlib.md5(data).hexdigest():  # noqa: S324
            raise ObjectStoreError(f"object store: {key}: stored bytes differ from those sent")

    def get(self, key: str) -> bytes:
        body: bytes = self._call(f"get {key}", "get_object", Key=key)["Body"].read()
        return body

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", "delete_object", Key=key)

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(f"list {prefix}", "list_objects_v2", Prefix=prefix, **token)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def listing(self, prefix: str = "") -> Iterator[list[tuple[str, float]]]:
        """Pages of ``(key, last modified as a Unix time)`` under ``prefix``."""
        token: dict[str, str] = {}
        while True:
            page = self._call(f"list {prefix}", "list_objects_v2", Prefix=prefix, **token)
            yield [(o["Key"], o["LastModified"].timestamp()) for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}


def parse_key(key: str) -> tuple[str, str, int, str] | None:
    """``(unit, camera, sequence, sha256)`` of a segment's key; None for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or not parts[2].endswith(".seg"):
        return None
    seq, _, digest = parts[2][: -len(".seg")].partition("-")
    if not seq.isdigit() or len(digest) != 64:
        return None
    return parts[0], parts[1], int(seq), digest
