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
# botocore's own limits for one call of the default client: attempts, and per attempt connect and read time-outs.
# The loader's reads use a client without botocore retries (s3_client's timeout_s) and retry in with_retries.
BOTO_ATTEMPTS, CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 5, 10, 60
MAX_DELAY_S = 30.0  # cap of our own backoff between attempts


class S3Error(RuntimeError):
    """An S3 operation that failed after its retries; the message names the object."""


def split_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/key/part' -> ('bucket', 'key/part')."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URL: {url!r}")
    return parsed.netloc, parsed.path.lstrip("/")


@lru_cache(maxsize=8)
def s3_client(endpoint_url: str | None = None, timeout_s: float | None = None):
    """A boto3 S3 client; endpoint from the argument, else $USFMAE_S3_ENDPOINT_URL, else AWS.

    `timeout_s`: one request at most, connect and read time-outs of that many seconds, no retries of
    botocore's own (the caller retries, within its budget: the loader's per-window budget)."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    if timeout_s is None:
        cfg = Config(retries={"max_attempts": BOTO_ATTEMPTS, "mode": "standard"}, connect_timeout=CONNECT_TIMEOUT_S,
                     read_timeout=READ_TIMEOUT_S)
    else:
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=timeout_s, read_timeout=timeout_s)
    return boto3.client("s3", endpoint_url=endpoint, config=cfg)


def request_limit_s(timeout_s: float) -> float:
    """How long one request of a `timeout_s` client waits at most with nothing arriving: connect, then read."""
    return 2 * timeout_s


def endpoint_of(endpoint_url: str | None = None) -> str:
    """The endpoint requests go to (for error messages)."""
    return s3_client(endpoint_url).meta.endpoint_url


def is_permanent(error: Exception) -> bool:
    """A 4xx answer other than 408 (time-out) and 429 (slow down), e.g. NoSuchKey or AccessDenied: retrying
    cannot help."""
    response = getattr(error, "response", None)  # botocore's ClientError carries the answer
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def with_retries(what: str, fn, attempts: int = 5, base_delay: float = 0.5, budget_s: float | None = None):
    """Call fn(); on failure wait base_delay * 2**i (at most MAX_DELAY_S) and retry; raise S3Error naming `what`.

    `budget_s`: no new attempt starts once that many seconds have passed since the first (a training rank
    must give up before the process-group timeout, see PretrainConfig.s3_retry_budget_s). A permanent
    answer (is_permanent: a missing object, no access) is not retried.
    """
    start = time.monotonic()
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # botocore raises many types; all but permanent answers are retried
            delay = min(base_delay * 2**i, MAX_DELAY_S)
            spent = time.monotonic() - start
            if is_permanent(e):
                raise S3Error(f"{what}: {type(e).__name__}: {e}") from e
            if budget_s is not None and spent + delay >= budget_s:
                raise S3Error(f"{what}: failed after {i + 1} attempt(s) in {spent:.1f} s (retry budget "
                              f"{budget_s:.3g} s, data.s3_retry_budget_s): {type(e).__name__}: {e}") from e
            if i == attempts - 1:
                raise S3Error(f"{what}: failed after {attempts} attempts: {type(e).__name__}: {e}") from e
            time.sleep(delay)


def read_bytes(url: str, endpoint_url: str | None = None, attempts: int = 5, budget_s: float | None = None,
               timeout_s: float | None = None) -> bytes:
    """Whole object as bytes (shards are read whole so a dropped connection only retries one object);
    `timeout_s` as in s3_client."""
    bucket, key = split_s3_url(url)
    client = s3_client(endpoint_url, timeout_s)
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
