"""Where a fleet's manifest is read from: a local file, or an S3 object pinned by its version
(``s3://bucket/key?versionId=V``), so that a redriven or repeated rollout reads the very same targets."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from premigrate.engine import ConfigurationError

MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def read_manifest(location: str) -> str:
    if not location.startswith("s3://"):
        try:
            data = Path(location).read_bytes()
        except OSError as error:
            raise ConfigurationError(
                f"cannot read the targets manifest {location}: {error.strerror or error}"
            ) from None
        return _decoded(data, location)
    parsed = urllib.parse.urlsplit(location)
    version = urllib.parse.parse_qs(parsed.query).get("versionId", [None])[0]
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise ConfigurationError(f"{location}: an S3 manifest is s3://bucket/key, optionally ?versionId=V")
    return _decoded(_s3_object(bucket, key, version, location), location)


def _s3_object(bucket: str, key: str, version: str | None, location: str) -> bytes:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    pinned = {"VersionId": version} if version else {}
    try:
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key, **pinned)["Body"]
        data: bytes = body.read(MAX_MANIFEST_BYTES + 1)
    except (BotoCoreError, ClientError) as error:
        code = error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else type(error).__name__
        raise ConfigurationError(f"cannot read the targets manifest {location} ({code})") from None
    return data


def _decoded(data: bytes, location: str) -> str:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ConfigurationError(f"the targets manifest {location} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigurationError(f"the targets manifest {location} is not UTF-8 (byte {error.start})") from None
