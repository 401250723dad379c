"""Batch arithmetic of a run: from the config, the shard manifests and the world size.

With `deepspeed.global_batch_size` = G set, every world size W runs (batch_split):
- exact: G itself, when some accumulation count a (from the fewest that keeps the micro-batch within
  `micro_batch_size`, up to twice that) makes G / (a x W) a whole micro-batch;
- nearest: otherwise the realisable batch nearest G at that fewest accumulation count, micro-batch
  round(G / (a x W)), and the peak lr scaled by realised / G (MAE's linear rule; with optimizer.lr null the
  base-lr rule gives the same).
DeepSpeed needs train_batch_size = micro x accumulation x W, so every rank takes the same micro-batch. Total
and warmup steps (the lr schedule) come from G, not from the realised batch, so a run resumed on another
world size continues the same schedule at the same step; the data position is carried in samples
(data.epoch.Segment), so every sample of an epoch is still trained on once.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..config import ConfigError, DeepSpeedSection, PretrainConfig
from ..data.epoch import apportion
from ..data.sources import Shard, resolve


@dataclass(frozen=True)
class BatchSplit:
    micro: int
    accum: int
    realised: int  # micro x accum x world: DeepSpeed's train_batch_size
    planned: int  # deepspeed.global_batch_size, or the realised batch without it
    rule: str  # "exact" | "nearest" | "micro x accumulation x world"
    note: str  # why, for the plan and the dry run

    @property
    def lr_scale(self) -> float:
        return self.realised / self.planned


@dataclass
class Plan:
    sources: list[list[Shard]]
    counts: list[int]  # samples drawn from each source per epoch
    epoch_samples: int
    world_size: int
    batch: BatchSplit
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
                "dropped_per_epoch": self.epoch_samples - self.steps_per_epoch * self.global_batch,
                "planned_global_batch_size": self.batch.planned, "batch_rule": self.batch.rule,
                "batch_note": self.batch.note}


def batch_split(ds: DeepSpeedSection, world: int) -> BatchSplit:
    """Micro-batch, accumulation steps and realised global batch at `world` ranks (module docstring)."""
    if ds.global_batch_size is None:
        accum = ds.grad_accum_steps or 1
        g = ds.micro_batch_size * accum * world
        return BatchSplit(ds.micro_batch_size, accum, g, g, "micro x accumulation x world",
                          f"{ds.micro_batch_size} x {accum} x {world} ranks (deepspeed.global_batch_size null)")
    g = ds.global_batch_size
    cap = ds.micro_batch_size or math.ceil(g / world)  # null: G / world, no accumulation
    fewest = math.ceil(g / (cap * world))
    if ds.grad_accum_steps is not None:
        if ds.micro_batch_size and ds.micro_batch_size * ds.grad_accum_steps * world != g:
            raise ConfigError(f"deepspeed.grad_accum_steps={ds.grad_accum_steps} contradicts deepspeed.global_batch_"
                              f"size={g} with micro_batch_size={ds.micro_batch_size} on {world} ranks; leave "
                              "grad_accum_steps null")
        tries = [ds.grad_accum_steps]
    else:  # exact at up to twice the fewest accumulation steps (micro-batches no smaller than half the cap)
        tries = range(fewest, 2 * fewest + 1)
    for accum in tries:
        if g % (accum * world) == 0:
            micro = g // (accum * world)
            return BatchSplit(micro, accum, g, g, "exact",
                              f"{g} = {micro} x {accum} accumulation x {world} ranks")
    if ds.grad_accum_steps is not None:
        raise ConfigError(f"deepspeed.grad_accum_steps={ds.grad_accum_steps} cannot realise deepspeed.global_batch_size="
                          f"{g} on {world} ranks ({g} / ({ds.grad_accum_steps} x {world}) is not whole): leave "
                          "grad_accum_steps null and the world size picks it")
    micro = max(1, round(g / (fewest * world)))
    real = micro * fewest * world
    return BatchSplit(micro, fewest, real, g, "nearest",
                      f"{g} is not a whole number of micro-batches of at most {cap} on {world} ranks: nearest "
                      f"realisable global batch {real} = {micro} x {fewest} accumulation x {world} ranks "
                      f"({(real - g) / g:+.1%}), peak lr scaled by {real}/{g}; schedule (total and warmup steps) "
                      f"as planned for {g}")


def data_fingerprint(sources: list[list[Shard]], counts: list[int]) -> str:
    """Shard file names and sample counts per source (not their location: moving a folder keeps it)."""
    names = [[(PurePosixPath(s.url).name, s.samples) for s in src] for src in sources]
    return hashlib.sha256(json.dumps([names, counts]).encode()).hexdigest()[:16]


def make_plan(cfg: PretrainConfig, world_size: int) -> Plan:
    if not cfg.data.shards:
        raise ConfigError("data.shards is empty: pass --shards or set data.shards in the config")
    split = batch_split(cfg.deepspeed, world_size)
    global_batch = split.realised
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
    # the schedule of the planned batch at every world size (module docstring)
    total = cfg.schedule.max_steps or max(1, math.ceil(cfg.schedule.epochs * (epoch_samples // split.planned)))
    peak = (cfg.optimizer.lr * split.lr_scale if cfg.optimizer.lr is not None
            else cfg.optimizer.base_lr * global_batch / 256)
    return Plan(sources, counts, epoch_samples, world_size, split, split.micro, split.accum, global_batch,
                steps_per_epoch, total, int(round(cfg.schedule.warmup_fraction * total)), peak,
                data_fingerprint(sources, counts))
