"""The DeepSpeed pretraining loop.

The only module that drives DeepSpeed (fullstate reads its partitions). Rank and world size come in from the
launcher, the batch arithmetic from plan.make_plan, the device from device.select_device. Checkpoints hold
full fp32 weights, AdamW moments and a global data position (usfmae.checkpoint, data.epoch), so a run
resumes on any number of GPUs.

The hot path: a micro-batch makes no host sync of ours. Losses and non-finite flags stay on the device
(health.StepHealth) and are read at sync points: logging steps, checkpoint steps and the last step, where
one all-reduce gives the logged loss and the skipped steps. What DeepSpeed synchronises in its backward and
step is its own (benchmarks/README.md "Host syncs per step"). One DataLoader serves the whole run: its
stream goes on from epoch to epoch.
"""

import json
import math
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Iterator

import deepspeed
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..checkpoint import fetch_checkpoint, load_into, save_safetensors
from ..config import ConfigError, PretrainConfig, save_resolved
from ..data.cache import ShardCache
from ..runstore import CHECKPOINTS, RunStore, default_scratch
from ..shards.config import S3Config
from ..data.epoch import RngTag, Segment, seed_of
from ..data.fetch import ShardFetch
from ..data.stream import PretrainStream, StreamPlan, worker_init
from ..data.transforms import normalize_batch, pretrain_transform
from ..model import create_model
from ..model.masking import get_masking
from .checkpointing import RunCheckpoints, resume_tag
from .compiling import compile_model
from .agreement import agree
from .device import cpu_threads, loader_workers, param_dtype, resolve_precision, select_device
from .ds_config import build_ds_config
from .fullstate import EngineState, FullState, digest
from .health import StepHealth, skip_non_finite_steps
from .knn_monitor import BackgroundKnn
from .monitor import MetricsLogger, ThroughputWindow, flops_per_image, mfu, save_reconstruction_grid
from .optim import build_optimizer
from .plan import make_plan
from .rundir import check_shared_run_dir
from ..optim import lr_at

EXPORT_NAME = "model.safetensors"
METRICS, TENSORBOARD = "metrics.jsonl", "tensorboard"


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. too many consecutive non-finite losses)."""


def _check_knn_data(path: str) -> None:
    """Fail at start-up, naming the key and the path, if the k-NN monitor's folder is not usable."""
    from ..data.labelled import FolderDataset

    try:
        FolderDataset(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"logging.knn_data: {e}") from None


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """Seed of one micro-step's masking draws on one rank: the same at any resume point."""
    return seed_of(seed, step, micro, rank, RngTag.MASKING)


def seed_generator(device: torch.device, seed: int) -> None:
    """Seed the generator `device` draws from, only that one: torch.manual_seed also seeds every accelerator
    backend, and on a CUDA build without CUDA in use (CPU ranks) records a stack trace for each, every call."""
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)  # this rank's GPU, the current device
    else:
        torch.default_generator.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: PretrainConfig, rank: int, world_size: int, local_rank: int = 0):
        self.cfg, self.rank, self.world = cfg, rank, world_size
        self.selected_device = select_device(cfg.deepspeed.device, local_rank)
        self.device, self.device_type = self.selected_device.torch_device, self.selected_device.type
        self.threads, self.threads_from = torch.get_num_threads(), "torch's default"
        if self.device_type == "cpu":  # ranks sharing a node's cores: no more threads than cores in all
            self.threads, self.threads_from = cpu_threads(cfg.deepspeed.cpu_threads)
            torch.set_num_threads(self.threads)
        self.precision = resolve_precision(cfg.deepspeed.precision, self.selected_device)
        # on S3, this rank's files live in node-local scratch until uploaded (usfmae.runstore)
        scratch = Path(cfg.scratch_dir) if cfg.scratch_dir else default_scratch(cfg.output_dir)
        self.store = RunStore(cfg.output_dir, scratch / f"rank{rank}", S3Config(endpoint_url=cfg.data.s3_endpoint_url))
        self.run_dir = self.store.root  # where this rank writes the run directory's files
        self.plan = make_plan(cfg, world_size)
        self.stream_plan = StreamPlan(self.plan.sources, self.plan.counts, cfg.seed, cfg.data.shuffle_buffer)
        self.ds_conf = build_ds_config(cfg, world_size, self.precision)
        workers, self.workers_from = loader_workers(cfg.data.num_workers, self.device_type)
        self.loader_workers = agree(self.precision, self.ds_conf, workers, world_size)  # before the first step
        self.workers = max(1, self.loader_workers)  # streams per rank (0 workers: one, in-process)
        self.is_main = rank == 0
        self.step = self.skipped_total = self.micro_done = 0  # skipped_total: as of the last checkpoint loaded
        self.samples_base = (0, 0)  # (step, samples seen by then): a resume at another global batch counts on
        self.segment = self._fresh_segment(0)
        self.last_full: FullState | None = None
        self.data_faults, self.data_faults_seen = [], set()  # since the last record; warned about
        self.last_save_time = time.monotonic()  # rank 0's clock for checkpoint.every_minutes
        if cfg.logging.knn_every:
            _check_knn_data(cfg.logging.knn_data)

    def _fresh_segment(self, epoch: int, remaining=None) -> Segment:
        p = self.plan
        return Segment.start(epoch, remaining or ((0, p.epoch_samples),), self.world, self.workers, p.micro_batch,
                             p.grad_accum)

    # -------------------------------------------------------------- set-up
    def print(self, *args) -> None:
        if self.is_main:
            print("[usfmae]", *args, flush=True)

    def build(self) -> None:
        cfg, p = self.cfg, self.plan
        store = self.store
        check_shared_run_dir(store, self.rank)  # before anything is written or read there
        self.resume_from = resume_tag(store, self.rank)  # rank 0's decision, the same on every rank
        self.logs = [METRICS, TENSORBOARD] if self.is_main else []  # what this rank appends to: uploaded (S3)
        if cfg.logging.data_log:
            self.logs.append(f"data/rank{self.rank}.jsonl")
            self.data_log = store.local(self.logs[-1])
            self.data_log.parent.mkdir(parents=True, exist_ok=True)
        else:
            self.data_log = None
        for name in self.logs:
            if name != TENSORBOARD:  # S3: the run's log so far, to go on appending to
                store.restore(name)
        self.logger = MetricsLogger(self.run_dir, cfg.logging.tensorboard, self.is_main)
        torch.manual_seed(cfg.seed)
        model = self._new_model()
        if cfg.checkpoint.init_from and self.resume_from is None:
            init = fetch_checkpoint(cfg.checkpoint.init_from, cfg.data.s3_endpoint_url)
            self.print(str(load_into(model, init, verbose=False)))
        if cfg.deepspeed.activation_checkpointing:
            model.set_grad_checkpointing(True)
        self.masking = partial(get_masking(cfg.masking.strategy), **cfg.masking.strategy_kwargs())
        self.raw_model = model
        trainable = {n for n, q in model.named_parameters() if q.requires_grad}
        # Fixed tables (sin-cos position embeddings) in fp32 as built, before DeepSpeed casts the model to
        # bf16/fp16: checkpoints and the export carry these, not rounded copies.
        self.fixed = {n: t.detach().float().clone() for n, t in model.state_dict().items() if n not in trainable}
        n_params = sum(q.numel() for q in model.parameters())
        self.fwd_flops = flops_per_image(model, self._image_size(), model.in_chans) if self.is_main else 0
        ds = cfg.deepspeed
        net = compile_model(model, ds.compile_scope, ds.compile_backend) if ds.compile else model
        opt_cfg = cfg.optimizer
        optimizer = build_optimizer(model, p.peak_lr, opt_cfg.weight_decay, opt_cfg.betas, opt_cfg.eps,
                                    opt_cfg.impl)  # plain names
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=net, optimizer=optimizer, config=self.ds_conf)
        if self.engine.zero_optimization_stage() == 0:  # the one stage at which DeepSpeed would apply a NaN step
            skip_non_finite_steps(optimizer)
        self.state_io = EngineState(self.engine, model)
        self.checkpoints = RunCheckpoints(cfg, p, store, self.state_io, model, self.fixed, self.is_main)
        self.knn = BackgroundKnn(self._new_model, cfg.logging.knn_data, self.device, cfg.seed) \
            if self.is_main and cfg.logging.knn_every else None
        self.print(f"model {cfg.model.preset}: {n_params / 1e6:.2f}M parameters, "
                   f"{self.fwd_flops / 1e9:.3f} GFLOPs/image forward at mask ratio {cfg.masking.ratio}")
        self.print(f"{self.world} rank(s) on {self.device_type} ({self.threads} torch threads each: {self.threads_from}; "
                   f"{self.loader_workers} loader workers: {self.workers_from}), "
                   f"{self.precision}, ZeRO {self.engine.zero_optimization_stage()}; "
                   f"epoch {p.epoch_samples} samples = {p.steps_per_epoch} steps of {p.global_batch} "
                   f"({p.micro_batch} x {p.grad_accum} accumulation x {self.world} ranks); {p.total_steps} steps, "
                   f"warmup {p.warmup_steps}, peak lr {p.peak_lr:.3g}; batch: {p.batch.note}")
        if any(spec.startswith("s3://") for spec in cfg.data.shards):
            d = cfg.data
            cache = f"shard cache {d.shard_cache_dir} (at most {d.shard_cache_bytes.human_readable()})" \
                if d.shard_cache_dir else "no shard cache (data.shard_cache_dir)"
            self.print(f"S3 reads: retry budget {cfg.s3_retry_budget_s():g} s per window, request time-out "
                       f"{d.s3_timeout_s:g} s; {cache}")
        if self.is_main:
            save_resolved(cfg, self.run_dir)
            store.publish("config.yaml")
        self.logger.log({"event": "start", "params": n_params, "flops_per_image": self.fwd_flops,
                         "device": self.device_type, "precision": self.precision, "torch_threads": self.threads,
                         "zero_stage": self.engine.zero_optimization_stage(),
                         **p.summary()})
        self._maybe_resume()
        self.health = StepHealth(self.device, cfg.checkpoint.max_bad_steps, self.step, self.skipped_total)
        # positions filled by stand-ins, faults met: on the device, summed over ranks in the settle's all-reduce
        self.data_counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        self.window = ThroughputWindow(self.device)

    def _new_model(self) -> torch.nn.Module:
        cfg = self.cfg
        return create_model(cfg.model.preset, **cfg.masking.model_kwargs(), **cfg.model.overrides())

    def _image_size(self) -> int:
        return self.raw_model.patch_embed.img_size[0]

    def _maybe_resume(self) -> None:
        loaded = self.checkpoints.load(self.resume_from)
        if loaded is None:
            return
        state = loaded.state
        self.step, self.skipped_total = state["step"], state["skipped_total"]
        self.samples_base = (self.step, state.get("samples_seen", self.step * state["plan"]["global_batch_size"]))
        saved = Segment(**{**state["data"]["segment"],
                           "remaining": tuple(tuple(x) for x in state["data"]["segment"]["remaining"])})
        self.segment, self.micro_done = saved, state["data"]["micro_done"]
        if self._fresh_segment(saved.epoch, saved.remaining) != saved:  # another world size, workers or batch
            self.segment = self._fresh_segment(saved.epoch, saved.remaining_after(self.micro_done))
            self.micro_done = 0
        held = digest(self.state_io.gather())  # read back from the engine: what it trains from now on
        saved_world = state["plan"]["world_size"]
        self.print(f"resumed from {loaded.path}: step {self.step}, epoch {saved.epoch}, saved on {saved_world} "
                   f"rank(s), now {self.world}")
        self.logger.log({"event": "resume", "step": self.step, "epoch": saved.epoch, "checkpoint": loaded.path,
                         "saved_world_size": saved_world, "world_size": self.world,
                         "new_layout": self.segment != saved, "state_digest": held if self.is_main else None})

    # -------------------------------------------------------------- data
    def micro_batches(self) -> Iterator[tuple[torch.Tensor, dict]]:
        """(uint8 images, info) from the current data position on, epoch after epoch, from one DataLoader whose
        workers live for the whole run; self.segment follows the stream into each new epoch."""
        cfg, d = self.cfg, self.cfg.data
        cache = ShardCache(d.shard_cache_dir, int(d.shard_cache_bytes), d.s3_endpoint_url) if d.shard_cache_dir else None
        fetch = ShardFetch(d.s3_endpoint_url, cfg.s3_retry_budget_s(), d.s3_timeout_s, cache)
        stream = PretrainStream(self.stream_plan, self.segment, pretrain_transform(self._image_size(), cfg.data.augment),
                                self.rank, self.micro_done, fetch, accum=self.plan.grad_accum)
        workers = self.loader_workers
        loader = DataLoader(stream, batch_size=None, num_workers=workers, worker_init_fn=worker_init,
                            prefetch_factor=2 if workers else None, pin_memory=self.device_type == "cuda")
        expected = self.micro_done
        for imgs, info in loader:
            if info["epoch"] != self.segment.epoch:  # the stream has gone on to the next epoch
                self.segment, expected = self._fresh_segment(info["epoch"]), 0
            if info["micro"] != expected:
                raise RuntimeError(f"data loader delivered micro-batch {info['micro']} of epoch {info['epoch']}, "
                                   f"expected {expected}")
            expected += 1
            self._note_data_faults(info)
            yield imgs, info

    def _note_data_faults(self, info: dict) -> None:
        """Warn (on this rank, once per epoch and fault) about damaged shards and unreadable samples, and count
        them for the next record."""
        if info["skipped"]:  # a scalar added on the device: no host-to-device copy
            self.data_counts[0] += info["skipped"]
        for fault in info["data_errors"]:
            seen = (info["epoch"], fault["shard"], fault["key"], fault["error"])
            if seen in self.data_faults_seen:  # every stream that opens a damaged shard reports it
                continue
            self.data_faults_seen.add(seen)
            self.data_faults.append({**fault, "rank": self.rank, "epoch": info["epoch"]})
            self.data_counts[1] += 1
            lost = f"; {fault['lost']} sample(s) missing" if fault.get("lost") else ""
            print(f"[usfmae] rank {self.rank} WARNING: skipping damaged data in epoch {info['epoch']}: shard "
                  f"{fault['shard']}, sample {fault['key']}: {fault['error']}{lost}; their positions take other "
                  f"samples of the same shuffle window", file=sys.stderr, flush=True)

    def _log_data_faults(self, skipped: int, faults: int) -> None:
        """Collective when any rank met a fault since the last record (every rank knows it from settle): rank 0
        logs one data_error event with every rank's faults."""
        if faults:
            gathered = [None] * self.world
            dist.all_gather_object(gathered, self.data_faults)
            if self.is_main:
                self.logger.log({"event": "data_error", "step": self.step, "skipped_samples": skipped,
                                 "faults": [f for rank in gathered for f in rank]})
        self.data_faults = []
        self.data_counts.zero_()

    def _log_data(self, info: dict) -> None:
        record = {"step": self.step, "epoch": self.segment.epoch, "micro": info["micro"], "worker": info["worker"],
                  "keys": info["keys"], "new_shards": info["new_shards"]}
        with self.data_log.open("a") as f:
            f.write(json.dumps(record) + "\n")

    # -------------------------------------------------------------- loop
    def train(self) -> dict:
        cfg, p = self.cfg, self.plan
        data = self.micro_batches()
        while self.step < p.total_steps:
            lr = lr_at(self.step, p.total_steps, p.peak_lr, cfg.schedule.min_lr, p.warmup_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            for micro in range(p.grad_accum):
                imgs, pred, mask = self._micro_step(*next(data), micro)
            self.step += 1
            self.health.end_step()
            timed = self._log_step(lr) if self._sync_due() else False
            self._image_grid_and_knn(imgs, pred, mask)
            if self.step == cfg.schedule.stop_at_step and self.step < p.total_steps:
                self.save()
                self.print(f"stopped after step {self.step} (schedule.stop_at_step); rerun to continue")
                return self.close({"steps": self.step, "stopped": True})
            if (self.step % cfg.checkpoint.every_steps == 0 or timed) and self.step < p.total_steps:
                self.save()
        self.save()
        return self.finish()

    def _micro_step(self, imgs: torch.Tensor, info: dict, micro: int):
        """Forward, backward and DeepSpeed's step for one micro-batch; no host sync of ours."""
        self.micro_done = info["micro"] + 1
        # inputs in the parameters' dtype (fp16 weights reject fp32 inputs); pinned memory: an asynchronous copy
        imgs = normalize_batch(imgs.to(self.device, non_blocking=True), param_dtype(self.precision))
        if self.data_log is not None:
            self._log_data(info)
        seed_generator(self.device, _step_seed(self.cfg.seed, self.step, micro, self.rank))
        mask = self.masking(imgs.shape[0], self.raw_model.num_patches, self.cfg.masking.ratio, device=self.device)
        loss, pred, mask = self.engine(imgs, mask=mask)
        self.engine.backward(self.health.guard(loss))  # NaN everywhere for a non-finite loss: the step is skipped
        self.engine.step()
        self.window.images += imgs.shape[0] * self.world
        return imgs, pred, mask

    def _sync_due(self) -> bool:
        """Logging steps, checkpoint steps (a checkpoint is never written past a stop) and the last step."""
        cfg, step = self.cfg, self.step
        return (step % cfg.logging.every_steps == 0 or step % cfg.checkpoint.every_steps == 0
                or step in (self.plan.total_steps, cfg.schedule.stop_at_step))

    def _samples_seen(self) -> int:
        """Images trained on since the run began, over every global batch it has had."""
        step, seen = self.samples_base
        return seen + (self.step - step) * self.plan.global_batch

    def _save_due_by_clock(self) -> bool:
        """Rank 0's vote: checkpoint.every_minutes have passed since the last save (or the start)."""
        minutes = self.cfg.checkpoint.every_minutes
        return self.is_main and minutes is not None and time.monotonic() - self.last_save_time >= minutes * 60

    def _log_step(self, lr: float) -> bool:
        """Collective: settle the losses and skipped steps since the last record, stop or log; true when rank 0's
        clock says a checkpoint is due (its vote rides in the settle's all-reduce: every rank agrees)."""
        settled = self.health.settle(self.step, self.data_counts, self._save_due_by_clock())
        skipped_samples, faults = settled.counts
        self._log_data_faults(skipped_samples, faults)
        if settled.skipped:
            self.print(f"steps {settled.first_step}-{self.step}: {settled.skipped} skipped (non-finite loss), "
                       f"{settled.bad_in_row} in a row now")
        if settled.stop_at is not None:
            raise TrainingStopped(
                f"{self.cfg.checkpoint.max_bad_steps} consecutive non-finite losses at step {settled.stop_at} (read "
                f"at step {self.step}: losses are read at logging and checkpoint steps); stopping. The last good "
                f"checkpoint is kept in {self.store.where(CHECKPOINTS)}. Lower optimizer.lr or check the data.")
        p, timing = self.plan, self.window.close()  # after the settle's host sync: the device has done the steps
        grad_norm = float(self.engine.get_global_grad_norm() or 0.0)
        record = {"step": self.step, "epoch": self.segment.epoch, "loss": settled.loss, "lr": lr,
                  "grad_norm": grad_norm if math.isfinite(grad_norm) else None, **timing,
                  "samples_seen": self._samples_seen(), "skipped_steps": self.health.skipped_total,
                  "data/skipped_samples": skipped_samples}
        if (u := mfu(self.fwd_flops, timing["images_per_s"], self.world, self.precision)) is not None:
            record["mfu"] = u
        if self.precision == "fp16":
            record["loss_scale"] = float(self.engine.optimizer.loss_scale)
        self.logger.log(record)
        loss = "n/a (none finite)" if settled.loss is None else f"{settled.loss:.4f}"
        self.print(f"step {self.step}/{p.total_steps} epoch {self.segment.epoch} loss {loss} lr {lr:.3g} "
                   f"{timing['images_per_s']:.1f} img/s")
        return settled.vote

    def _image_grid_and_knn(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> None:
        """Reconstruction grids and the k-NN monitor: rank 0 only, never a collective; timed apart."""
        every, knn = self.cfg.logging.image_grid_every, self.cfg.logging.knn_every
        if self.is_main and every and self.step % every == 0:
            name = f"images/step{self.step:08d}.png"
            with self.window.side_work("image_grid"):
                save_reconstruction_grid(self.raw_model, imgs, pred, mask, self.store.local(name))
                self.checkpoints.write(f"uploading {self.store.where(name)}", lambda: self.store.publish(name))
        if self.knn is None:
            return
        self._log_knn(self.knn.poll())
        if self.step % knn == 0 and self.step < self.plan.total_steps:  # the last one: in finish()
            with self.window.side_work("knn"):  # the weight copy; the measurement runs beside training
                submitted = self.knn.submit(self.raw_model, self.step, self.segment.epoch)
            if not submitted:
                self.print(f"step {self.step}: k-NN monitor still busy with an earlier step; this one skipped")
                self.logger.log({"event": "knn_skipped", "step": self.step})

    def _log_knn(self, results: list[dict]) -> None:
        for r in results:
            self.logger.log(r)
            if "error" in r:
                self.print(f"step {r['step']}: k-NN monitor failed: {r['error']}")
            else:
                self.print(f"step {r['step']} k-NN monitor: knn acc {r['knn/knn_accuracy']:.3f} f1 "
                           f"{r['knn/knn_macro_f1']:.3f}, linear acc {r['knn/linear_accuracy']:.3f} f1 "
                           f"{r['knn/linear_macro_f1']:.3f} ({r['knn/images']} images, {r['knn/seconds']:.1f} s)")

    # -------------------------------------------------------------- checkpoints
    def _data_state(self) -> dict:
        seg, done = self.segment, self.micro_done
        if done >= seg.micro_batches:  # the epoch is complete: the next one starts afresh
            seg, done = self._fresh_segment(seg.epoch + 1), 0
        return {"segment": asdict(seg), "micro_done": done, "fingerprint": self.plan.data_fingerprint}

    def save(self) -> str:
        """Collective: every rank sends its partitions; rank 0's writer thread writes checkpoints/stepN/ (and,
        on S3, uploads the logs) while training goes on."""
        tag = f"step{self.step:08d}"
        with self.window.side_work("checkpoint"):
            if self.is_main:
                self.logger.flush()
            uploads = self.store.snapshot(self.logs)  # S3: the logs as of this checkpoint
            state = {"step": self.step, "skipped_total": self.health.skipped_total, "data": self._data_state(),
                     "precision": self.precision, "samples_seen": self._samples_seen()}
            full = self.checkpoints.save(tag, state, then=uploads)
            if self.is_main:
                self.last_full = full
            else:
                uploads()
        self.last_save_time = time.monotonic()
        return tag

    def finish(self) -> dict:
        """Collective, after the last save: rank 0 writes the export; every rank waits for rank 0's writes (and
        stops if one failed); rank 0 runs the last k-NN measurement."""
        out = {"steps": self.step, "skipped_steps": self.health.skipped_total}
        if self.is_main:
            tensors, meta = self.checkpoints.model_tensors(self.last_full), self.checkpoints.metadata(self.step)
            path = self.store.local(EXPORT_NAME)
            self.checkpoints.write(f"writing the export {self.store.where(EXPORT_NAME)}",
                                   lambda: (save_safetensors(tensors, path, meta), self.store.publish(EXPORT_NAME)))
            out["model"] = self.store.where(EXPORT_NAME)
        self.checkpoints.settle()
        if self.is_main:
            self.print(f"wrote fp32 model {out['model']}")
            if self.knn is not None:
                self._log_knn(self.knn.join())
                self.knn.submit(self.raw_model, self.step, self.segment.epoch)
                self._log_knn(self.knn.join())
        return self.close(out)

    def drain(self) -> None:
        """Rank 0, when training stops early: let the writer finish what it was given (a failure is printed)."""
        if self.is_main and getattr(self, "checkpoints", None) is not None:
            try:
                self.checkpoints.writer.wait()
            except RuntimeError as e:
                print(f"error: {e}", file=sys.stderr)

    def close(self, out: dict) -> dict:
        """Collective: wait for rank 0's writes, log the end, and (S3) upload the logs a last time."""
        self.checkpoints.settle()
        if self.knn is not None:
            self._log_knn(self.knn.join())
        self.logger.log({"event": "end", **out})
        self.logger.close()
        uploads = self.store.snapshot(self.logs)
        if self.is_main:
            self.checkpoints.write("uploading the logs", uploads)
            self.checkpoints.writer.wait()
        else:
            uploads()
        return out
