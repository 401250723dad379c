"""Start-up agreement: every rank resolved the same precision and DeepSpeed config, and one loader layout.

Each rank resolves its precision from its own GPU (train.device) and builds its DeepSpeed JSON itself; ranks
on mixed GPU generations (bf16 on one node, fp16 on another under precision: auto) or started with other
files or flags would otherwise train with mismatched gradients or hang in a collective. One all_gather_object
before the first step compares them and stops every rank with the same message naming the groups.
"""

import hashlib
import json
import socket

import torch.distributed as dist

from ..config import ConfigError


def config_digest(ds_config: dict) -> str:
    return hashlib.sha256(json.dumps(ds_config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _ranks(ranks: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], ranks[0]
    for a, b in zip(ranks, ranks[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


def check_agreement(records: list[dict]) -> None:
    """ConfigError naming each group of ranks (and their hosts) that resolved another precision or config."""
    groups: dict[tuple[str, str], list[int]] = {}
    for rank, r in enumerate(records):
        groups.setdefault((r["precision"], r["ds_config"]), []).append(rank)
    if len(groups) == 1:
        return
    lines = []
    for (precision, digest), ranks in groups.items():
        hosts = sorted({records[r]["host"] for r in ranks})
        lines.append(f"  {precision}, DeepSpeed config {digest}: rank(s) {_ranks(ranks)} on {', '.join(hosts)}")
    raise ConfigError("the ranks resolved different precisions or DeepSpeed configs, so their gradients would not "
                      "match:\n" + "\n".join(lines) + "\nprecision: auto picks bf16 on GPUs of compute capability >= "
                      "8.0 and fp16 below: on mixed GPU generations set --set deepspeed.precision=fp16 (or run on "
                      "one GPU model); a different config at the same precision means the nodes were started with "
                      "other config files, --set flags or code versions")


def agree(precision: str, ds_config: dict, workers: int, world: int) -> int:
    """Collective (one all_gather_object; none on one rank): stop unless every rank resolved the same
    precision and DeepSpeed config; returns the loader workers every rank uses, the fewest any rank derived
    (data.epoch.Segment lays every rank's streams out alike)."""
    if world == 1:
        return workers
    mine = {"host": socket.gethostname(), "precision": precision, "ds_config": config_digest(ds_config),
            "workers": workers}
    everyone: list = [None] * world
    dist.all_gather_object(everyone, mine)
    check_agreement(everyone)
    return min(r["workers"] for r in everyone)
