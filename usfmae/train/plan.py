"""Batch arithmetic of a run: from the config, the shard manifests and the world size.

With `deepspeed.global_batch_size` set, the global batch, peak lr, steps per epoch, total and warmup steps
are the same at every world size; the world size only decides the micro-batch and accumulation split, and
one that cannot realise the global batch exactly is refused (ConfigError naming the keys).
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..config import ConfigError, DeepSpeedSection, PretrainConfig
from ..data.epoch import apportion
from ..data.sources import Shard, resolve


@dataclass
class Plan:
    sources: list[list[Shard]]
    counts: list[int]  # samples drawn from each source per epoch
    epoch_samples: int
    world_size: int
    micro_batch: int
    grad_accum: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    data_fingerprint: str  # shard names and counts: a resumed epoch must see the same shards

    def summary(self) -> dict:
        return {"world_size": self.world_size, "global_batch_size": self.global_batch,
                "micro_batch_size": self.micro_batch, "grad_accum_steps": self.grad_accum,
                "peak_lr": self.peak_lr, "epoch_samples": self.epoch_samples, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "dropped_per_epoch": self.epoch_samples - self.steps_per_epoch * self.global_batch}


def realisable_world_sizes(global_batch: int, micro: int | None, limit: int = 1024) -> list[int]:
    """World sizes (up to `limit`) that split `global_batch` into whole micro-batches and accumulation steps."""
    if micro and global_batch % micro:
        return []
    per = global_batch // micro if micro else global_batch  # micro-batches per step, over all ranks
    return [w for w in range(1, min(per, limit) + 1) if per % w == 0]


def batch_split(ds: DeepSpeedSection, world: int) -> tuple[int, int, int]:
    """(micro-batch, accumulation steps, global batch) at `world` ranks; ConfigError if it cannot be done."""
    if ds.global_batch_size is None:
        accum = ds.grad_accum_steps or 1
        return ds.micro_batch_size, accum, ds.micro_batch_size * accum * world
    g = ds.global_batch_size
    micro = ds.micro_batch_size or g // world
    if micro == 0 or g % (micro * world):
        fits = realisable_world_sizes(g, ds.micro_batch_size)
        how = f"deepspeed.micro_batch_size={ds.micro_batch_size}" if ds.micro_batch_size else \
            "deepspeed.micro_batch_size=null (global / world size)"
        raise ConfigError(f"deepspeed.global_batch_size={g} cannot be realised on {world} ranks with {how}: "
                          f"{g} / ({micro or g / world:g} x {world}) is not a whole number of accumulation steps. "
                          f"World sizes that can: {fits or 'none (global_batch_size is not a multiple of micro_batch_size)'}"
                          "; or change deepspeed.micro_batch_size")
    accum = g // (micro * world)
    if ds.grad_accum_steps is not None and ds.grad_accum_steps != accum:
        raise ConfigError(f"deepspeed.grad_accum_steps={ds.grad_accum_steps} contradicts deepspeed.global_batch_size="
                          f"{g} = {micro} (micro_batch_size) x {world} ranks x {accum}; leave grad_accum_steps null")
    return micro, accum, g


def data_fingerprint(sources: list[list[Shard]], counts: list[int]) -> str:
    """Shard file names and sample counts per source (not their location: moving a folder keeps it)."""
    names = [[(PurePosixPath(s.url).name, s.samples) for s in src] for src in sources]
    return hashlib.sha256(json.dumps([names, counts]).encode()).hexdigest()[:16]


def make_plan(cfg: PretrainConfig, world_size: int) -> Plan:
    if not cfg.data.shards:
        raise ConfigError("data.shards is empty: pass --shards or set data.shards in the config")
    micro, accum, global_batch = batch_split(cfg.deepspeed, world_size)
    try:
        sources = [resolve(spec, cfg.data.s3_endpoint_url) for spec in cfg.data.shards]
    except ValueError as e:
        raise ConfigError(f"data.shards: {e}") from None
    sizes = [sum(s.samples for s in src) for src in sources]
    for spec, size in zip(cfg.data.shards, sizes):
        if size == 0:
            raise ConfigError(f"data.shards: source {spec!r} holds no samples")
    epoch_samples = cfg.data.epoch_samples or sum(sizes)
    counts = apportion(epoch_samples, list(cfg.data.weights) if cfg.data.weights else [float(s) for s in sizes])
    steps_per_epoch = epoch_samples // global_batch  # the partial last batch of each epoch is dropped
    if steps_per_epoch == 0:
        raise ConfigError(f"an epoch of {epoch_samples} samples is smaller than one global batch of {global_batch} "
                          "(deepspeed.global_batch_size / micro_batch_size): use fewer ranks or a smaller batch")
    total = cfg.schedule.max_steps or max(1, math.ceil(cfg.schedule.epochs * steps_per_epoch))
    peak = cfg.optimizer.lr if cfg.optimizer.lr is not None else cfg.optimizer.base_lr * global_batch / 256
    return Plan(sources, counts, epoch_samples, world_size, micro, accum, global_batch, steps_per_epoch, total,
                int(round(cfg.schedule.warmup_fraction * total)), peak, data_fingerprint(sources, counts))
