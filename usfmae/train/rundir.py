"""The run directory every rank must share, proved at start-up.

Checkpoints, `latest`, resuming and the final export assume one run directory seen by every rank: a
shared filesystem (NFS, Lustre, FSx, GPFS) or S3 (usfmae.runstore). With node-local disks only node 0 would
see `latest`, and the other nodes would start from scratch while node 0 resumes. So before training, rank 0
writes a fresh nonce into the run directory and every rank reads it back through its own view of
`--output` (on S3: proving that every rank reaches the bucket with its own endpoint and credentials).
"""

import secrets
import socket

import torch.distributed as dist

from ..config import ConfigError
from ..runstore import RunStore

NONCE_FILE = ".shared-run-dir-check"


class RunDirError(ConfigError):
    """Ranks do not share the run directory; the message lists the ranks and hosts that did not see it."""


def check_shared_run_dir(store: RunStore, rank: int) -> None:
    """Collective: every rank proves it sees the run directory rank 0 writes to; all raise RunDirError if not."""
    nonce = [secrets.token_hex(16) if rank == 0 else None, None]
    if rank == 0:
        try:
            store.write_text(NONCE_FILE, nonce[0])
        except Exception as e:  # noqa: BLE001 - OSError or S3Error: every rank must stop with it
            nonce[1] = f"rank 0 on {socket.gethostname()} cannot write {store.where(NONCE_FILE)}: {type(e).__name__}: {e}"
    dist.broadcast_object_list(nonce, src=0)
    if nonce[1] is not None:
        raise RunDirError(f"the run directory {store.where()} is not writable: {nonce[1]}")
    try:
        seen, why = store.read_text(NONCE_FILE) == nonce[0], "does not see what rank 0 wrote"
    except Exception as e:  # noqa: BLE001 - an unreachable endpoint is reported like a missing file
        seen, why = False, f"{type(e).__name__}: {e}"
    views = [None] * dist.get_world_size()
    where = store.where() if store.remote else str(store.root.resolve())
    dist.all_gather_object(views, (rank, socket.gethostname(), where, seen, why))
    missing = [v for v in views if not v[3]]
    if not missing:
        return
    who = "; ".join(f"rank {r} on {host} ({at}): {reason}" for r, host, at, _, reason in missing)
    if store.remote:
        raise RunDirError(f"the run directory {store.where()} is not reachable from all ranks: {who}. Every node needs "
                          "the same S3 endpoint (data.s3_endpoint_url or $USFMAE_S3_ENDPOINT_URL) and credentials")
    raise RunDirError(f"the run directory {store.where()} is not shared by all ranks: {who} at "
                      f"{views[0][2]}/{NONCE_FILE}. A node-local folder cannot hold a multi-node run: put --output "
                      "on S3 (--output s3://bucket/run; nothing else needs sharing) or on a filesystem every node "
                      "mounts at the same path (NFS, Lustre, FSx, GPFS): checkpoints, resuming and the export need it")
