"""The fleet's working files in S3: what the state machine's Map states read (the targets, split into waves
and server groups) and what Step Functions' ResultWriter wrote back. JSON in, JSON out; every S3 error
becomes a ConfigurationError naming the object, never a traceback.

    >>> store = FleetStore("premigrate-fleet-123")
    >>> store.put_json("runs/r1/plan/targets.json", [{"name": "a"}])
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from premigrate.engine import ConfigurationError

MAX_OBJECT_BYTES = 512 * 1024 * 1024
"""More than any result file of 10,000 databases (each result is a few hundred bytes): a bound, not a size."""
_READERS = 16
"""Objects read or written at once: a fleet of many crowded servers has thousands of group files."""
_MAX_KEYS = 100_000
"""At most this many keys listed under one prefix (a bound for the loop; a run writes a few per group)."""


class FleetStore:
    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # Bounded, so a network that does not answer fails a step instead of hanging it.
            config = Config(connect_timeout=5, read_timeout=30, retries={"total_max_attempts": 4, "mode": "standard"})
            self._client = boto3.client("s3", config=config)
        return self._client

    def put_json(self, key: str, value: object) -> None:
        body = json.dumps(value, separators=(",", ":")).encode()
        self._call("write", key, lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=body))

    def get_json(self, key: str) -> Any:
        def read() -> bytes:
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read(MAX_OBJECT_BYTES + 1)
            return data

        data = self._call("read", key, read)
        if len(data) > MAX_OBJECT_BYTES:
            raise ConfigurationError(f"s3://{self.bucket}/{key} is larger than {MAX_OBJECT_BYTES} bytes")
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigurationError(f"s3://{self.bucket}/{key} is not JSON ({error})") from None

    def get_many(self, keys: list[str]) -> list[Any]:
        """Several objects at once, in the order asked for."""
        with ThreadPoolExecutor(max_workers=_READERS) as pool:
            return list(pool.map(self.get_json, keys))

    def put_many(self, objects: dict[str, object]) -> None:
        with ThreadPoolExecutor(max_workers=_READERS) as pool:
            list(pool.map(lambda item: self.put_json(*item), objects.items()))

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, page by page."""
        token: dict[str, str] = {}
        listed = 0
        while listed < _MAX_KEYS:
            listing = functools.partial(self.client.list_objects_v2, Bucket=self.bucket, Prefix=prefix, **token)
            page = self._call("list", prefix, listing)
            for entry in page.get("Contents", []):
                listed += 1
                yield str(entry["Key"])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}
        raise ConfigurationError(f"more than {_MAX_KEYS} objects under s3://{self.bucket}/{prefix}")

    def _call(self, verb: str, key: str, call: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except (BotoCoreError, ClientError) as error:
            code = (
                error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else type(error).__name__
            )
            raise ConfigurationError(
                f"could not {verb} s3://{self.bucket}/{key} ({code}): the function's role may "
                "read and write only the fleet bucket's runs/ prefix and read its manifests/"
            ) from None
