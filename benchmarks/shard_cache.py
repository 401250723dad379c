"""Shard cache benchmark: two epochs streamed from S3 with and without the node-local cache (data.shard_cache_dir).

    python benchmarks/shard_cache.py                 # 1024 synthetic 224x224 scans in 8 shards, ~1 min
    python benchmarks/shard_cache.py --mbps 50       # the object store's answers throttled to 50 MB/s per GET

moto's S3 server on 127.0.0.1 holds the shards; a counting proxy (usfmae.testing.s3proxy.FaultProxy, no faults
injected) sits in front of it and counts GETs and body bytes, optionally throttled to --mbps per request (a
remote object store; unthrottled, loopback is far faster than any real one). Per variant, one DataLoader with
--workers workers runs the Trainer's stream (epoch after epoch, windows read ahead) for two epochs; a consumer
takes the batches as fast as they come. Per epoch: wall seconds from its first batch to the next epoch's first
(the first epoch from the loader's start), and the GETs and bytes the proxy served meanwhile (read-ahead moves
the next epoch's first windows into the current one; the totals are exact). Variants alternate over --rounds.
Prints one JSON document.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, synthetic_shards  # noqa: E402

from usfmae.constants import DEFAULT_IMAGE_SIZE  # noqa: E402
from usfmae.data import s3  # noqa: E402
from usfmae.data.cache import ShardCache  # noqa: E402
from usfmae.data.epoch import Segment  # noqa: E402
from usfmae.data.fetch import ShardFetch  # noqa: E402
from usfmae.data.sources import resolve  # noqa: E402
from usfmae.data.stream import PretrainStream, StreamPlan, worker_init  # noqa: E402
from usfmae.data.transforms import pretrain_transform  # noqa: E402
from usfmae.testing.s3proxy import FaultProxy  # noqa: E402


def traffic(proxy: FaultProxy) -> tuple[int, int]:
    """(GETs, body bytes) the proxy has served so far."""
    with proxy.lock:
        return sum(v for (method, _), v in proxy.requests.items() if method == "GET"), proxy.bytes_out


def two_epochs(shards: list, proxy: FaultProxy, cache: ShardCache | None, args) -> list[dict]:
    """Per epoch: seconds, GETs, bytes, over one loader running the Trainer's stream."""
    n = sum(s.samples for s in shards)
    stream_plan = StreamPlan([shards], [n], seed=0, shuffle_buffer=args.buffer)
    seg = Segment.start(0, ((0, n),), 1, args.workers, args.batch, 1)
    how = ShardFetch(proxy.url, budget_s=600, timeout_s=60, cache=cache)
    stream = PretrainStream(stream_plan, seg, pretrain_transform(DEFAULT_IMAGE_SIZE), 0, 0, how, accum=1)
    loader = DataLoader(stream, batch_size=None, num_workers=args.workers, worker_init_fn=worker_init,
                        prefetch_factor=2)
    epochs, start, before, got = [], time.perf_counter(), traffic(proxy), 0
    for _, info in loader:
        got += 1
        if got % seg.micro_batches == 0:  # the epoch's last batch
            now, seen = time.perf_counter(), traffic(proxy)
            epochs.append({"seconds": round(now - start, 3), "gets": seen[0] - before[0],
                           "mb": round((seen[1] - before[1]) / 1e6, 2)})
            start, before = now, seen
            if len(epochs) == 2:
                break
    del loader
    return epochs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1024, help="synthetic images (default 1024)")
    ap.add_argument("--shard-size", type=int, default=128, help="images per shard (default 128)")
    ap.add_argument("--batch", type=int, default=64, help="micro-batch (default 64)")
    ap.add_argument("--buffer", type=int, default=256, help="shuffle_buffer (default 256: windows of 2 shards)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per variant, alternating (default 2)")
    ap.add_argument("--mbps", type=float, default=None, help="throttle each S3 answer to this many MB/s")
    args = ap.parse_args(argv)

    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    with contextlib.redirect_stdout(sys.stderr):  # its start-up line: stdout is the JSON document's
        server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    proxy = FaultProxy(endpoint, mbps=args.mbps).start()
    try:
        with tempfile.TemporaryDirectory(prefix="usfmae-cache-bench-") as tmp:
            work = Path(tmp)
            local, _ = synthetic_shards(work, args.images, args.shard_size)
            client = s3.s3_client(endpoint)
            client.create_bucket(Bucket="bench")
            for f in sorted(local.glob("*.tar")) + [local / "manifest.json"]:
                client.upload_file(str(f), "bench", f"corpus/{f.name}")
            shards = resolve("s3://bench/corpus", proxy.url)
            runs = {"no_cache": [], "cache": []}
            for r in range(args.rounds):
                for name in ("no_cache", "cache")[::1 if r % 2 == 0 else -1]:
                    cache = ShardCache(work / f"cache{r}", 10 * 2**30, proxy.url) if name == "cache" else None
                    runs[name].append(two_epochs(shards, proxy, cache, args))
                    print(f"[shard_cache] round {r} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
            corpus_mb = sum(s.bytes for s in shards) / 1e6
    finally:
        proxy.stop()
        server.stop()

    def summary(variant: list[list[dict]]) -> dict:
        out = {f"epoch{e + 1}": {"seconds_median": round(statistics.median(run[e]["seconds"] for run in variant), 3),
                                 "gets": [run[e]["gets"] for run in variant], "mb": [run[e]["mb"] for run in variant]}
               for e in range(2)}
        return {**out, "total_mb": [round(sum(epoch["mb"] for epoch in run), 2) for run in variant]}

    print(json.dumps({"machine": machine_info(), "images": args.images, "shards": len(shards),
                      "corpus_mb": round(corpus_mb, 2), "workers": args.workers, "batch": args.batch,
                      "shuffle_buffer": args.buffer, "mbps_per_get": args.mbps, "runs": runs,
                      "summary": {name: summary(v) for name, v in runs.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
