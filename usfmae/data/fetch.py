"""One shard's samples: its bytes from local disk, the node-local cache or S3, checked against the manifest and
parsed, with what a damaged shard lost.

A shard that is truncated or damaged (its size or SHA-256 differs from the manifest's, its tar breaks off, or
it holds fewer samples than the manifest says) gives the samples that are whole, and a fault naming the shard,
the sample being read when it broke and how many samples are missing; the stream fills their positions
(stream.py). S3 reads retry within a deadline, the window's (windows.WindowReader: the budget is per window).
"""

import hashlib
import io
import tarfile
import time
from dataclasses import dataclass

from webdataset.tariterators import base_plus_ext, tar_file_iterator

from . import s3
from .cache import ShardCache
from .sources import Shard


@dataclass(frozen=True)
class ShardFetch:
    """How shards are fetched: S3 endpoint, retry budget per window, time-out per request, node-local cache."""
    endpoint_url: str | None = None
    budget_s: float | None = None  # data.s3_retry_budget_s: one window's reads retry this long at most
    timeout_s: float | None = None  # data.s3_timeout_s: connect and read time-out of one request
    cache: ShardCache | None = None

    def describe(self) -> str:
        budget = f"retry budget {self.budget_s:g} s per window (data.s3_retry_budget_s)" if self.budget_s else \
            "no retry budget"
        return f"endpoint {s3.endpoint_of(self.endpoint_url)}, {budget}"


def integrity_problem(shard: Shard, data: bytes) -> str | None:
    """How `data` differs from the manifest's size and SHA-256 of the shard (None: as listed, or not listed)."""
    if shard.bytes is not None and len(data) != shard.bytes:
        return f"{len(data)} bytes, the manifest says {shard.bytes}"
    if shard.sha256 is not None and hashlib.sha256(data).hexdigest() != shard.sha256:
        return "content differs from the manifest's sha256"
    return None


def fetch_bytes(shard: Shard, how: ShardFetch, deadline: float | None = None) -> bytes:
    """The shard's bytes; S3 reads retry until `deadline` (time.monotonic), through the cache when there is one."""
    if not shard.url.startswith("s3://"):
        with open(shard.url, "rb") as f:
            return f.read()

    def download() -> bytes:
        budget = None if deadline is None else max(0.0, deadline - time.monotonic())
        return s3.read_bytes(shard.url, how.endpoint_url, attempts=1000 if budget is not None else 5,
                             budget_s=budget, timeout_s=how.timeout_s)

    if how.cache is None:
        return download()
    return how.cache.get(shard.url, download, lambda data: integrity_problem(shard, data) is None, deadline)


def parse_samples(url: str, data: bytes) -> tuple[list[dict], str | None, str | None]:
    """(whole samples in tar order, the error that ended the tar early or None, the sample being read then).

    A sample is kept with the files read whole before a break (a member cut short is not among them); one
    without an image gets a stand-in later, named as unreadable (stream.decode_image)."""
    samples, current, last, error = [], None, None, None
    try:
        for f in tar_file_iterator(io.BytesIO(data)):
            key, ext = base_plus_ext(f["fname"])
            if key is None:
                continue
            last = key
            if current is None or current["__key__"] != key:
                if current is not None:
                    samples.append(current)
                current = {"__key__": key, "__url__": url}
            current[ext.lower()] = f["data"]
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        error = str(e).split(" @ <")[0]  # webdataset appends the file object's repr
    if current is not None:
        samples.append(current)
    return samples, error, last


def salvage(shard: Shard, data: bytes) -> tuple[list[dict], dict | None]:
    """The whole samples of a shard (at most the manifest's count), and a fault record when it is damaged
    (None: intact).

    A shard as the manifest lists it (size and SHA-256 match, or none listed, and the tar ends properly) that
    holds another number of samples than the manifest says is an error (RuntimeError): the manifest is wrong,
    not the shard."""
    problem = integrity_problem(shard, data)
    samples, error, last = parse_samples(shard.url, data)
    intact = problem is None and error is None
    if intact and (len(samples) > shard.samples or len(samples) < shard.samples and shard.sha256):
        raise RuntimeError(f"shard {shard.url} holds {len(samples)} samples, its manifest says {shard.samples}: "
                           "rebuild the manifest")
    if intact and len(samples) == shard.samples:
        return samples, None
    samples = samples[:shard.samples]  # a damaged name can split a sample in two
    reasons = [r for r in (problem, error and f"tar breaks off: {error}") if r] or ["the tar ends early"]
    return samples, {"shard": shard.url, "key": last or "(before the first)", "lost": shard.samples - len(samples),
                     "error": f"{'; '.join(reasons)} ({len(samples)} of {shard.samples} samples readable)"}


def read_shard(shard: Shard, how: ShardFetch | None = None) -> list[dict]:
    """All samples of an intact shard, else RuntimeError naming it (benchmarks; the stream salvages instead)."""
    try:
        samples, fault = salvage(shard, fetch_bytes(shard, how or ShardFetch()))
    except (OSError, s3.S3Error) as e:
        raise RuntimeError(f"cannot read shard {shard.url}: {e}") from e
    if fault is not None:
        raise RuntimeError(f"shard {shard.url}: {fault['error']}, reading {fault['key']}")
    return samples
