"""The DeepSpeed pretraining loop.

The only module that imports DeepSpeed (besides checkpoint conversion). Rank and world size come in
from the launcher; everything else comes from the PretrainConfig.
"""

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import deepspeed
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..checkpoint import load_into, load_deepspeed, save_safetensors
from ..config import ConfigError, PretrainConfig, save_resolved
from ..data.sources import Shard, resolve
from ..data.stream import PretrainStream, StreamPlan, batches_per_epoch, worker_init
from ..data.transforms import normalize_batch, pretrain_transform
from ..model import create_model
from ..model.masking import get_masking
from .ds_config import build_ds_config, pick_device, resolve_precision
from .monitor import MetricsLogger, flops_per_image, mfu, save_reconstruction_grid
from .optim import build_optimizer
from .schedule import lr_at

CKPT_DIR = "checkpoints"
EXPORT_NAME = "model.safetensors"


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. too many consecutive non-finite losses)."""


@dataclass
class Plan:
    """Batch arithmetic of a run, derived from the config and the shard manifests."""
    sources: list[list[Shard]]
    weights: list[float]
    epoch_samples: int
    micro_batches_per_epoch: int  # per rank
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    global_batch: int


def make_plan(cfg: PretrainConfig, world_size: int) -> Plan:
    if not cfg.data.shards:
        raise ValueError("data.shards is empty: pass --shards or set data.shards in the config")
    sources = [resolve(spec, cfg.data.s3_endpoint_url) for spec in cfg.data.shards]
    sizes = [sum(s.samples for s in src) for src in sources]
    for spec, size in zip(cfg.data.shards, sizes):
        if size == 0:
            raise ValueError(f"shard source {spec!r} holds no samples")
    weights = list(cfg.data.weights) if cfg.data.weights else [float(s) for s in sizes]
    ds = cfg.deepspeed
    epoch_samples = cfg.data.epoch_samples or sum(sizes)
    micro = batches_per_epoch(epoch_samples, ds.micro_batch_size * ds.grad_accum_steps, world_size) * ds.grad_accum_steps
    steps_per_epoch = micro // ds.grad_accum_steps
    total = cfg.schedule.max_steps or max(1, math.ceil(cfg.schedule.epochs * steps_per_epoch))
    global_batch = ds.micro_batch_size * ds.grad_accum_steps * world_size
    peak = cfg.optimizer.lr if cfg.optimizer.lr is not None else cfg.optimizer.base_lr * global_batch / 256
    return Plan(sources, weights, epoch_samples, micro, steps_per_epoch, total,
                int(round(cfg.schedule.warmup_fraction * total)), peak, global_batch)


def _check_knn_data(path: str) -> None:
    """Fail at start-up, naming the key and the path, if the k-NN monitor's folder is not usable."""
    from ..finetune.datasets import FolderDataset

    try:
        FolderDataset(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"logging.knn_data: {e}") from None


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + micro * 104_729 + rank * 15_485_863) % (2**62)


class Trainer:
    def __init__(self, cfg: PretrainConfig, rank: int, world_size: int, local_rank: int = 0):
        self.cfg, self.rank, self.world = cfg, rank, world_size
        self.device_type, _, _ = pick_device()
        self.precision = resolve_precision(cfg.deepspeed.precision, self.device_type)
        self.device = torch.device(f"cuda:{local_rank}" if self.device_type == "cuda" else "cpu")
        self.run_dir = Path(cfg.output_dir)
        self.ckpt_dir = self.run_dir / CKPT_DIR
        self.plan = make_plan(cfg, world_size)
        self.is_main = rank == 0
        self.logger = MetricsLogger(self.run_dir, cfg.logging.tensorboard, self.is_main)
        self.step = self.epoch = self.batch_in_epoch = self.skipped_total = 0
        self.data_log = None
        if cfg.logging.data_log:
            self.data_log = self.run_dir / "data" / f"rank{rank}.jsonl"
            self.data_log.parent.mkdir(parents=True, exist_ok=True)
        if cfg.logging.knn_every:
            _check_knn_data(cfg.logging.knn_data)

    # -------------------------------------------------------------- set-up
    def print(self, *args) -> None:
        if self.is_main:
            print("[usfmae]", *args, flush=True)

    def build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model.preset, **cfg.masking.model_kwargs(), **cfg.model.overrides())
        if cfg.checkpoint.init_from and not self._has_checkpoint():
            report = load_into(model, cfg.checkpoint.init_from, verbose=False)
            self.print(str(report))
        if cfg.deepspeed.activation_checkpointing:
            model.set_grad_checkpointing(True)
        self.masking = partial(get_masking(cfg.masking.strategy), **cfg.masking.strategy_kwargs())
        self.raw_model = model
        n_params = sum(p.numel() for p in model.parameters())
        self.fwd_flops = flops_per_image(model, self._image_size(), self._in_chans()) if self.is_main else 0
        if cfg.deepspeed.compile:
            model = torch.compile(model, backend=cfg.deepspeed.compile_backend)
        optimizer = build_optimizer(model, self.plan.peak_lr, cfg.optimizer.weight_decay,
                                    cfg.optimizer.betas, cfg.optimizer.eps, cfg.optimizer.impl)
        ds_conf = build_ds_config(cfg, self.world, self.precision)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_conf)
        p = self.plan
        self.print(f"model {cfg.model.preset}: {n_params / 1e6:.2f}M parameters, "
                   f"{self.fwd_flops / 1e9:.3f} GFLOPs/image forward at mask ratio {cfg.masking.ratio}")
        self.print(f"{self.world} rank(s) on {self.device_type}, {self.precision}; epoch {p.epoch_samples} samples "
                   f"= {p.steps_per_epoch} steps of {p.global_batch}; {p.total_steps} steps, "
                   f"warmup {p.warmup_steps}, peak lr {p.peak_lr:.3g}")
        if self.is_main:
            save_resolved(cfg, self.run_dir)
        self.logger.log({"event": "start", "params": n_params, "flops_per_image": self.fwd_flops,
                         "world_size": self.world, "device": self.device_type, "precision": self.precision,
                         "total_steps": p.total_steps, "steps_per_epoch": p.steps_per_epoch})
        self._maybe_resume()

    def _image_size(self) -> int:
        return self.raw_model.patch_embed.img_size[0]

    def _in_chans(self) -> int:
        return self.raw_model.in_chans

    def _has_checkpoint(self) -> bool:
        return (self.ckpt_dir / "latest").is_file()

    def _maybe_resume(self) -> None:
        if not self._has_checkpoint():
            return
        tag = (self.ckpt_dir / "latest").read_text().strip()
        _, state = self.engine.load_checkpoint(str(self.ckpt_dir), tag=tag)
        if state is None:
            raise RuntimeError(f"could not load checkpoint {self.ckpt_dir / tag}")
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch, self.skipped_total = state["batch_in_epoch"], state["skipped_total"]
        self.print(f"resumed from {self.ckpt_dir / tag}: step {self.step}, epoch {self.epoch}, "
                   f"micro-batch {self.batch_in_epoch} of the epoch")
        self.logger.log({"event": "resume", "step": self.step, "epoch": self.epoch,
                         "batch_in_epoch": self.batch_in_epoch})

    # -------------------------------------------------------------- data
    def micro_batches(self) -> Iterator[tuple[int, int, torch.Tensor, dict]]:
        """(epoch, index in epoch, images, info) forever, starting at the resume position."""
        cfg, p = self.cfg, self.plan
        transform = pretrain_transform(self._image_size(), cfg.data.augment)
        splan = StreamPlan(p.sources, p.weights, cfg.deepspeed.micro_batch_size, p.micro_batches_per_epoch,
                           self.rank, self.world, cfg.seed, cfg.data.shuffle_buffer)
        epoch, start = self.epoch, self.batch_in_epoch
        while True:
            stream = PretrainStream(splan, transform, epoch=epoch, start_batch=start,
                                    endpoint_url=cfg.data.s3_endpoint_url)
            workers = min(cfg.data.num_workers, p.micro_batches_per_epoch)
            loader = DataLoader(stream, batch_size=None, num_workers=workers, worker_init_fn=worker_init,
                                prefetch_factor=2 if workers else None, pin_memory=self.device_type == "cuda")
            for i, (imgs, info) in enumerate(loader, start=start):
                yield epoch, i, imgs, info
            epoch, start = epoch + 1, 0

    def _log_data(self, epoch: int, idx: int, info: dict) -> None:
        record = {"step": self.step, "epoch": epoch, "batch": idx, "worker": info["worker"],
                  "keys": info["keys"], "new_shards": info["new_shards"]}
        with self.data_log.open("a") as f:
            f.write(json.dumps(record) + "\n")

    # -------------------------------------------------------------- loop
    def _all_finite(self, loss: torch.Tensor) -> bool:
        flag = torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0], device=self.device)
        dist.all_reduce(flag)
        return flag.item() == 0.0

    def _mean_across_ranks(self, value: float) -> float:
        t = torch.tensor([value], device=self.device, dtype=torch.float64)
        dist.all_reduce(t)
        return t.item() / self.world

    def train(self) -> dict:
        cfg, p = self.cfg, self.plan
        accum = cfg.deepspeed.grad_accum_steps
        data = self.micro_batches()
        bad_in_row, micro, losses = 0, 0, []
        t0, imgs_since = time.time(), 0
        while self.step < p.total_steps:
            epoch, idx, imgs, info = next(data)  # uint8 [B, C, S, S]
            imgs = normalize_batch(imgs.to(self.device, non_blocking=True),
                                   torch.bfloat16 if self.precision == "bf16" else torch.float32)  # [B, 3, S, S]
            if self.data_log is not None:
                self._log_data(epoch, idx, info)
            torch.manual_seed(_step_seed(cfg.seed, self.step, micro, self.rank))
            mask = self.masking(imgs.shape[0], self.raw_model.num_patches, cfg.masking.ratio, device=self.device)
            loss, pred, mask = self.engine(imgs, mask=mask)
            self.epoch, self.batch_in_epoch = epoch, idx + 1
            if not self._all_finite(loss):
                self.skipped_total += 1
                bad_in_row += 1
                self.print(f"step {self.step}: non-finite loss, micro-batch skipped ({bad_in_row} in a row)")
                if bad_in_row >= cfg.checkpoint.max_bad_steps:
                    raise TrainingStopped(
                        f"{bad_in_row} consecutive non-finite losses at step {self.step}; stopping. The last "
                        f"good checkpoint is kept in {self.ckpt_dir}. Lower optimizer.lr or check the data.")
                continue
            bad_in_row = 0
            lr = lr_at(self.step, p.total_steps, p.peak_lr, cfg.schedule.min_lr, p.warmup_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.engine.backward(loss)
            self.engine.step()
            losses.append(loss.item())
            imgs_since += imgs.shape[0] * self.world
            micro += 1
            if micro < accum:
                continue
            micro = 0
            self.step += 1
            if self.step % cfg.logging.every_steps == 0 or self.step == p.total_steps:
                elapsed = max(time.time() - t0, 1e-9)
                ips = imgs_since / elapsed
                record = {"step": self.step, "epoch": epoch, "loss": self._mean_across_ranks(sum(losses) / len(losses)),
                          "lr": lr, "grad_norm": float(self.engine.get_global_grad_norm() or 0.0),
                          "images_per_s": ips, "samples_seen": self.step * p.global_batch,
                          "skipped_steps": self.skipped_total}
                if (u := mfu(self.fwd_flops, ips, self.world)) is not None:
                    record["mfu"] = u
                self.logger.log(record)
                self.print(f"step {self.step}/{p.total_steps} epoch {epoch} loss {record['loss']:.4f} "
                           f"lr {lr:.3g} {ips:.1f} img/s")
                t0, imgs_since = time.time(), 0
            losses = []
            every = cfg.logging.image_grid_every
            if self.is_main and every and self.step % every == 0:
                save_reconstruction_grid(self.raw_model, imgs, pred, mask,
                                         self.run_dir / "images" / f"step{self.step:08d}.png")
            knn = cfg.logging.knn_every
            if knn and (self.step % knn == 0 or self.step == p.total_steps):
                self.monitor_features(epoch)
            if self.step % cfg.checkpoint.every_steps == 0 and self.step < p.total_steps:
                self.save()
        self.save()
        return self.finish()

    def monitor_features(self, epoch: int) -> None:
        """Frozen-encoder k-NN / linear probe on logging.knn_data, on rank 0; the other ranks wait.

        A failure is reported and logged, not raised: a monitor must not end a long run (and rank 0 must
        still reach the barrier the other ranks wait at).
        """
        if self.is_main:
            from ..finetune.probe import monitor_knn

            model = self.raw_model  # the MAE itself (DeepSpeed trains its parameters; no compile wrapper)
            was_training = model.training
            model.eval()
            try:
                values = monitor_knn(model, self.cfg.logging.knn_data, device=self.device, seed=self.cfg.seed)
            except Exception as e:  # noqa: BLE001 - reported below
                self.print(f"step {self.step}: k-NN monitor failed: {type(e).__name__}: {e}")
                self.logger.log({"event": "knn_failed", "step": self.step, "error": f"{type(e).__name__}: {e}"})
            else:
                self.logger.log({"step": self.step, "epoch": epoch, **{f"knn/{k}": v for k, v in values.items()}})
                self.print(f"step {self.step} k-NN monitor: knn acc {values['knn_accuracy']:.3f} "
                           f"f1 {values['knn_macro_f1']:.3f}, linear acc {values['linear_accuracy']:.3f} f1 "
                           f"{values['linear_macro_f1']:.3f} ({values['images']} images, {values['seconds']:.1f} s)")
            finally:
                model.train(was_training)
        dist.barrier()

    # -------------------------------------------------------------- checkpoints
    def save(self) -> str:
        tag = f"step{self.step:08d}"
        state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                 "skipped_total": self.skipped_total, "config": self.cfg.model_dump(mode="json")}
        if self.batch_in_epoch >= self.plan.micro_batches_per_epoch:  # the epoch is complete
            state["epoch"], state["batch_in_epoch"] = self.epoch + 1, 0
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state=state, save_latest=False)
        dist.barrier()
        if self.is_main:
            tmp = self.ckpt_dir / "latest.tmp"
            tmp.write_text(tag)
            os.replace(tmp, self.ckpt_dir / "latest")  # atomic: a kill never leaves a half-written 'latest'
            self._prune()
            self.print(f"saved checkpoint {self.ckpt_dir / tag}")
        dist.barrier()
        return tag

    def _prune(self) -> None:
        tags = sorted(d for d in self.ckpt_dir.iterdir() if d.is_dir() and d.name.startswith("step"))
        for old in tags[:-self.cfg.checkpoint.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def finish(self) -> dict:
        out = {"steps": self.step, "skipped_steps": self.skipped_total}
        if self.is_main:
            state = load_deepspeed(self.ckpt_dir)  # fp32 master weights, also right under bf16 + ZeRO
            meta = {"format": "usfmae-mae", "preset": self.cfg.model.preset,
                    "model_overrides": self.cfg.model.overrides(), "step": self.step}
            path = save_safetensors(state, self.run_dir / EXPORT_NAME, meta)
            self.print(f"wrote consolidated fp32 model {path}")
            out["model"] = str(path)
        self.logger.log({"event": "end", **out})
        self.logger.close()
        dist.barrier()
        return out
