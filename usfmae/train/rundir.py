"""The run directory every rank must share: proved at start-up, and pruned of old checkpoints.

Checkpoints, `latest`, resuming and the final export all assume one directory seen by every rank (a
shared filesystem: NFS, Lustre, FSx, GPFS). With node-local disks only node 0 would see `latest`, and the
other nodes would start from scratch while node 0 resumes. So before training, rank 0 writes a fresh
nonce into the run directory and every rank reads it back from its own view of `--output`.
"""

import os
import secrets
import shutil
import socket
from pathlib import Path

import torch.distributed as dist

from ..config import ConfigError

NONCE_FILE = ".shared-run-dir-check"


class RunDirError(ConfigError):
    """Ranks do not share the run directory; the message lists the ranks and hosts that did not see it."""


def check_shared_run_dir(run_dir: Path, rank: int) -> None:
    """Collective: every rank proves it sees the run directory rank 0 writes to; all raise RunDirError if not."""
    nonce = [secrets.token_hex(16) if rank == 0 else None]
    dist.broadcast_object_list(nonce, src=0)
    path = run_dir / NONCE_FILE
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(nonce[0])
        os.replace(tmp, path)
    dist.barrier()
    try:
        seen = path.read_text().strip() == nonce[0]
    except OSError:
        seen = False
    views = [None] * dist.get_world_size()
    dist.all_gather_object(views, (rank, socket.gethostname(), str(run_dir.resolve()), seen))
    missing = [v for v in views if not v[3]]
    if missing:
        who = ", ".join(f"rank {r} on {host} ({where})" for r, host, where, _ in missing)
        raise RunDirError(f"the run directory {run_dir} is not shared by all ranks: {who} cannot see what rank 0 "
                          f"wrote to {views[0][2]}/{NONCE_FILE}. Put --output on a filesystem every node mounts at "
                          "the same path (NFS, Lustre, FSx, GPFS): checkpoints, resuming and the export need it")


def prune_checkpoints(ckpt_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (and leftovers of interrupted saves)."""
    tags = sorted(d for d in ckpt_dir.iterdir() if d.is_dir() and d.name.startswith("step"))
    for d in tags:
        if d.name.endswith(".tmp"):
            shutil.rmtree(d, ignore_errors=True)
    done = [d for d in tags if not d.name.endswith(".tmp")]
    for old in done[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
