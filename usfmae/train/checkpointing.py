"""Saving a run and resuming it, on the same or another number of ranks.

A checkpoint (usfmae.checkpoint's training format) holds the full fp32 state gathered from the engine
(fullstate), the model's fixed tables as built, and plain data: step, data position, batch plan, config.
Resuming refuses, with what to do instead, what cannot carry over.

A save stalls training only for the gather (to rank 0, the one rank that copies to the host): rank 0's
writer thread then writes and publishes the files (usfmae.runstore: local or S3) while training goes on.
The next save, and the end of the run, first wait for the write before; a write that failed stops the run
on every rank at that point with CheckpointWriteError, the previous checkpoint still named by `latest`.
Which checkpoint a run resumes from is decided once, by rank 0, and broadcast.
"""

import json
import shutil
import threading
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from ..checkpoint import RUN_STATE, ExportMeta, read_run_checkpoint, stage_run_checkpoint
from ..config import ConfigError, PretrainConfig
from ..shards.config import S3Config
from ..runstore import CHECKPOINTS, RunStore
from .fullstate import EngineState, FullState
from .plan import Plan


class CheckpointWriteError(RuntimeError):
    """A checkpoint, log or export could not be written to the run directory; the message names it."""


class BackgroundWriter:
    """One thread running write jobs in order; the first failure is kept and raised by `wait`."""

    def __init__(self):
        self.jobs: list[tuple[str, Callable[[], None]]] = []
        self.cond = threading.Condition()
        self.error: CheckpointWriteError | None = None
        self.busy = False
        self.thread = threading.Thread(target=self._run, name="usfmae-run-writer", daemon=True)
        self.thread.start()

    def submit(self, what: str, job: Callable[[], None]) -> None:
        """Run job() after the jobs before it; `what` names it in the error when it fails."""
        with self.cond:
            self.jobs.append((what, job))
            self.cond.notify_all()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.jobs:
                    self.cond.wait()
                what, job = self.jobs.pop(0)
                self.busy = True
            try:
                if self.error is None:  # after a failure nothing more is written: the run is stopping
                    job()
            except Exception as e:  # noqa: BLE001 - OSError, S3Error alike: kept for wait() to raise
                self.error = e if isinstance(e, CheckpointWriteError) else CheckpointWriteError(
                    f"{what} failed: {type(e).__name__}: {e}")
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()

    def wait(self) -> None:
        """Block until every submitted job is done; raise the first failure (once)."""
        with self.cond:
            while self.jobs or self.busy:
                self.cond.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

def keep_saved_batch(cfg: PretrainConfig) -> PretrainConfig:
    """`cfg`, where a run without deepspeed.global_batch_size (global batch = micro x accumulation x world)
    resumes: with the global batch its latest checkpoint planned, so another world size realises that batch
    by plan.batch_split's rule (exact or nearest, lr scaled) instead of changing the recipe mid-run."""
    if cfg.deepspeed.global_batch_size is not None:
        return cfg
    store = RunStore(cfg.output_dir, s3=S3Config(endpoint_url=cfg.data.s3_endpoint_url))
    tag, missing = store.latest_checkpoint()
    state = store.read_text(f"{CHECKPOINTS}/{tag}/{RUN_STATE}") if tag is not None and not missing else None
    if state is None:
        return cfg
    saved = json.loads(state)["plan"]
    planned = saved.get("planned_global_batch_size", saved["global_batch_size"])
    ds = cfg.deepspeed.model_copy(update={"global_batch_size": planned, "grad_accum_steps": None})
    return cfg.model_copy(update={"deepspeed": ds})


@dataclass
class Loaded:
    """What a resumed run continues from (the engine already holds the weights and AdamW state)."""
    path: str  # the checkpoint's address in the run directory
    state: dict  # state.json


def resume_tag(store: RunStore, rank: int) -> str | None:
    """Collective: the checkpoint tag every rank resumes from (None: a fresh run), decided by rank 0 from
    `latest`, which must name a complete checkpoint; every rank raises the same ConfigError if not."""
    decision: list = [None, None]
    if rank == 0:
        try:
            tag, missing = store.latest_checkpoint()
            decision[0] = tag
            if tag is not None and missing:
                where = store.where(CHECKPOINTS)
                decision[1] = (
                    f"{where} holds a DeepSpeed per-rank checkpoint of an earlier usfmae, which cannot move to another "
                    f"world size or this format. Continue from its weights in a new run directory: --set "
                    f"checkpoint.init_from={where} --output NEW_DIR") if len(missing) == 3 else (
                    f"{where}/latest names {tag}, which lacks {', '.join(missing)}: the checkpoint is incomplete. "
                    f"Point {where}/latest at an earlier complete checkpoint, or start a new run directory")
        except Exception as e:  # noqa: BLE001 - an unreadable run directory: every rank must hear of it
            decision[1] = f"cannot read {store.where(CHECKPOINTS)}: {type(e).__name__}: {e}"
    dist.broadcast_object_list(decision, src=0)
    if decision[1] is not None:
        raise ConfigError(decision[1])
    return decision[0]


class RunCheckpoints:
    def __init__(self, cfg: PretrainConfig, plan: Plan, store: RunStore, state_io: EngineState, model: nn.Module,
                 fixed: dict[str, torch.Tensor], is_main: bool):
        self.cfg, self.plan, self.store, self.state_io = cfg, plan, store, state_io
        self.model, self.fixed, self.is_main = model, fixed, is_main
        self.writer = BackgroundWriter() if is_main else None
        self.last_saved: str | None = None  # the newest checkpoint known to be complete

    def model_tensors(self, full: FullState) -> dict[str, torch.Tensor]:
        """Every tensor of the model's state dict, fp32: trained ones from `full`, fixed ones as built."""
        return {n: full.weights[n] if n in full.weights else self.fixed[n] for n in self.model.state_dict()}

    def metadata(self, step: int) -> dict:
        """The safetensors header of a checkpoint or export at `step` (checkpoint.ExportMeta)."""
        return ExportMeta(self.cfg.model.preset, self.cfg.model.overrides(), step=step).metadata()

    def settle(self) -> None:
        """Collective: wait for rank 0's writes so far; every rank raises CheckpointWriteError if one failed."""
        outcome = [None]
        if self.writer is not None:
            try:
                self.writer.wait()
            except CheckpointWriteError as e:
                outcome[0] = str(e)
        dist.broadcast_object_list(outcome, src=0)
        if outcome[0] is not None:
            raise CheckpointWriteError(outcome[0])

    def save(self, tag: str, run_state: dict, then: Callable[[], None] | None = None) -> FullState:
        """Collective: wait for the previous save, gather the full state to rank 0, whose writer thread then
        writes checkpoints/<tag>/ and `latest` (and runs `then`, e.g. uploading logs) while training goes on."""
        self.settle()
        full = self.state_io.gather()
        if self.is_main:
            state = {**run_state, "adam_step": full.adam_step, "loss_scaler": full.loss_scaler,
                     "plan": self.plan.summary(), "config": self.cfg.model_dump(mode="json")}
            weights, meta = self.model_tensors(full), self.metadata(run_state["step"])
            self.writer.submit(f"writing checkpoint {self.store.where(f'{CHECKPOINTS}/{tag}')}",
                               lambda: self._write(tag, weights, full.moments, state, meta, then))
        return full

    def _write(self, tag: str, weights, moments, state: dict, meta: dict, then) -> None:
        staged = self.store.checkpoint_staging(tag)
        try:
            stage_run_checkpoint(staged, weights, moments, state, meta)
            where = self.store.publish_checkpoint(tag)
        except Exception as e:
            shutil.rmtree(staged, ignore_errors=True)  # frees the space a full disk needs for the next attempt
            before = f"the previous checkpoint ({self.last_saved}) stays valid" if self.last_saved else \
                "no earlier checkpoint of this run exists"
            raise CheckpointWriteError(
                f"writing checkpoint {self.store.where(f'{CHECKPOINTS}/{tag}')} failed: {type(e).__name__}: {e}. "
                f"The run stops; {before} and a rerun resumes from what `latest` names. Free space on, or make "
                f"writable, {self.store.where()} (or choose another --output)") from e
        self.last_saved = where
        print(f"[usfmae] saved checkpoint {where}", flush=True)
        self.store.prune_checkpoints(self.cfg.checkpoint.keep_last)
        if then is not None:
            then()

    def write(self, what: str, job: Callable[[], None]) -> None:
        """Rank 0: run job() on the writer thread, after the saves before it (errors as for checkpoints)."""
        self.writer.submit(what, job)

    def load(self, tag: str | None) -> Loaded | None:
        """Collective: load checkpoint `tag` (from resume_tag) into the engine and the model; None for a fresh run."""
        if tag is None:
            return None
        where = self.store.where(f"{CHECKPOINTS}/{tag}")
        path = self.store.fetch_checkpoint(tag)
        try:
            state, weights, moments = read_run_checkpoint(path)
        finally:
            self.store.drop_fetched(path)
        self.check_resumable(state, where)
        self.last_saved = where
        trainable = {n for n, _ in self.state_io.named}
        self.state_io.scatter(FullState({n: weights[n] for n in trainable}, moments, state["adam_step"],
                                        state.get("loss_scaler", {})))
        with torch.no_grad():  # the fixed tables: fp32 for the checkpoints, the engine's dtype in the model
            model_state = self.model.state_dict()
            for name in self.fixed:
                self.fixed[name] = weights[name].clone()
                model_state[name].copy_(weights[name])
        return Loaded(where, state)

    def check_resumable(self, state: dict, path: str) -> None:
        """Stop at start-up, saying what to do, where a checkpoint cannot carry over."""
        saved, p = state["plan"], self.plan
        if state["data"]["fingerprint"] != p.data_fingerprint:
            raise ConfigError(f"data.shards now resolve to other shards or counts than when {path} was saved, so "
                              "its position in the epoch means nothing: restore the shards, or continue from its "
                              f"weights in a new run: --set checkpoint.init_from={path} --output NEW_DIR")
        planned = saved.get("planned_global_batch_size", saved["global_batch_size"])
        if planned != p.batch.planned and self.cfg.deepspeed.global_batch_size is None:
            raise ConfigError(f"{path} was saved planning a global batch of {planned} ({saved['world_size']} ranks); "
                              f"here it would be {p.batch.planned}, changing the lr and schedule mid-run. Resume with "
                              f"--set deepspeed.global_batch_size={planned} (any world size realises it: "
                              "plan.batch_split)")
        if self.is_main and saved["global_batch_size"] != p.global_batch:
            print(f"[usfmae] note: global batch {p.global_batch} on {p.world_size} rank(s), "
                  f"{saved['global_batch_size']} when {path.rsplit('/', 1)[-1]} was saved: {p.batch.note}", flush=True)
        keys = ("total_steps", "warmup_steps") + (("peak_lr",) if saved["global_batch_size"] == p.global_batch else ())
        for key in keys:
            if saved[key] != p.summary()[key] and self.is_main:
                print(f"[usfmae] note: {key} was {saved[key]} when {path.rsplit('/', 1)[-1]} was saved, now {p.summary()[key]} "
                      "(changed config)", flush=True)
