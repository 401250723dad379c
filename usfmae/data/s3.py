"""S3 access through boto3 (AWS, MinIO, Ceph, moto): the standard credential chain plus an optional endpoint.

`open_url` streams an object with retries and backoff; `register_webdataset_s3` lets stock
`webdataset.WebDataset("s3://...")` read through it instead of shelling out to `aws`.
"""

import io
import os
import time
from functools import lru_cache
from urllib.parse import urlparse

ENDPOINT_ENV = "USFMAE_S3_ENDPOINT_URL"
# botocore's own limits for one call: attempts, and per attempt connect and read time-outs; standard-mode
# backoff between its attempts is at most 20 s. ATTEMPT_LIMIT_S bounds one call of ours, retries included.
BOTO_ATTEMPTS, CONNECT_TIMEOUT_S, READ_TIMEOUT_S, BOTO_MAX_BACKOFF_S = 5, 10, 60, 20
MAX_DELAY_S = 30.0  # cap of our own backoff between attempts
ATTEMPT_LIMIT_S = BOTO_ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + (BOTO_ATTEMPTS - 1) * BOTO_MAX_BACKOFF_S


class S3Error(RuntimeError):
    """An S3 operation that failed after its retries; the message names the object."""


def split_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/key/part' -> ('bucket', 'key/part')."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URL: {url!r}")
    return parsed.netloc, parsed.path.lstrip("/")


@lru_cache(maxsize=8)
def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client; endpoint from the argument, else $USFMAE_S3_ENDPOINT_URL, else AWS."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    cfg = Config(retries={"max_attempts": BOTO_ATTEMPTS, "mode": "standard"}, connect_timeout=CONNECT_TIMEOUT_S,
                 read_timeout=READ_TIMEOUT_S)
    return boto3.client("s3", endpoint_url=endpoint, config=cfg)


def with_retries(what: str, fn, attempts: int = 5, base_delay: float = 0.5, budget_s: float | None = None):
    """Call fn(); on failure wait base_delay * 2**i (at most MAX_DELAY_S) and retry; raise S3Error naming `what`.

    `budget_s`: no new attempt starts once that many seconds have passed since the first (a training rank
    must give up before the process-group timeout, see PretrainConfig.s3_retry_budget_s).
    """
    start = time.monotonic()
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # botocore raises many types; all are retried the same way
            delay = min(base_delay * 2**i, MAX_DELAY_S)
            spent = time.monotonic() - start
            if budget_s is not None and spent + delay >= budget_s:
                raise S3Error(f"{what}: failed after {i + 1} attempts in {spent:.0f} s (retry budget {budget_s:g} s, "
                              f"data.s3_retry_budget_s): {type(e).__name__}: {e}") from e
            if i == attempts - 1:
                raise S3Error(f"{what}: failed after {attempts} attempts: {type(e).__name__}: {e}") from e
            time.sleep(delay)


def read_bytes(url: str, endpoint_url: str | None = None, attempts: int = 5, budget_s: float | None = None) -> bytes:
    """Whole object as bytes (shards are read whole so a dropped connection only retries one object)."""
    bucket, key = split_s3_url(url)
    client = s3_client(endpoint_url)
    return with_retries(f"reading {url}", lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read(),
                        attempts, budget_s=budget_s)


def open_url(url: str, mode: str = "rb", endpoint_url: str | None = None, **_) -> io.BufferedIOBase:
    """A readable binary stream for an s3:// URL."""
    if "r" not in mode:
        raise ValueError("S3 streams are read-only; use usfmae.shards output sinks to write")
    return io.BytesIO(read_bytes(url, endpoint_url))


def list_objects(prefix_url: str, endpoint_url: str | None = None) -> list[str]:
    """Sorted s3:// URLs of every object under a prefix."""
    bucket, prefix = split_s3_url(prefix_url)
    client = s3_client(endpoint_url)
    urls: list[str] = []

    def page_all():
        urls.clear()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            urls.extend(f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []))
        return urls

    return sorted(with_retries(f"listing {prefix_url}", page_all))


def register_webdataset_s3() -> None:
    """Route webdataset's s3:// URLs through boto3 (no `pipe:aws`)."""
    import importlib

    gopen = importlib.import_module("webdataset.gopen")  # `webdataset.gopen` the attribute is a function
    gopen.gopen_schemes["s3"] = lambda url, mode="rb", bufsize=8192, **kw: open_url(url, mode)
