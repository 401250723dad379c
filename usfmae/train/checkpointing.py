"""Saving a run and resuming it, on the same or another number of ranks.

A checkpoint (usfmae.checkpoint's training format) holds the full fp32 state gathered from the engine
(fullstate), the model's fixed tables as built, and plain data: step, data position, batch plan, config.
Resuming refuses, with what to do instead, what cannot carry over.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import LATEST, RUN_STATE, ExportMeta, read_run_checkpoint, run_checkpoint_dir, write_run_checkpoint
from ..config import ConfigError, PretrainConfig
from .fullstate import EngineState, FullState
from .plan import Plan
from .rundir import prune_checkpoints

CKPT_DIR = "checkpoints"  # under the run directory


def keep_saved_batch(cfg: PretrainConfig) -> PretrainConfig:
    """`cfg`, where a run without deepspeed.global_batch_size (global batch = micro x accumulation x world)
    resumes: with the global batch its latest checkpoint planned, so another world size realises that batch
    by plan.batch_split's rule (exact or nearest, lr scaled) instead of changing the recipe mid-run."""
    if cfg.deepspeed.global_batch_size is not None:
        return cfg
    path = run_checkpoint_dir(Path(cfg.output_dir) / CKPT_DIR)
    if path is None:
        return cfg
    saved = json.loads((path / RUN_STATE).read_text())["plan"]
    planned = saved.get("planned_global_batch_size", saved["global_batch_size"])
    ds = cfg.deepspeed.model_copy(update={"global_batch_size": planned, "grad_accum_steps": None})
    return cfg.model_copy(update={"deepspeed": ds})


@dataclass
class Loaded:
    """What a resumed run continues from (the engine already holds the weights and AdamW state)."""
    path: Path
    state: dict  # state.json


class RunCheckpoints:
    def __init__(self, cfg: PretrainConfig, plan: Plan, ckpt_dir: Path, state_io: EngineState, model: nn.Module,
                 fixed: dict[str, torch.Tensor], is_main: bool):
        self.cfg, self.plan, self.ckpt_dir, self.state_io = cfg, plan, ckpt_dir, state_io
        self.model, self.fixed, self.is_main = model, fixed, is_main

    def model_tensors(self, full: FullState) -> dict[str, torch.Tensor]:
        """Every tensor of the model's state dict, fp32: trained ones from `full`, fixed ones as built."""
        return {n: full.weights[n] if n in full.weights else self.fixed[n] for n in self.model.state_dict()}

    def metadata(self, step: int) -> dict:
        """The safetensors header of a checkpoint or export at `step` (checkpoint.ExportMeta)."""
        return ExportMeta(self.cfg.model.preset, self.cfg.model.overrides(), step=step).metadata()

    def save(self, tag: str, run_state: dict) -> FullState:
        """Collective: gather the full state to rank 0, which writes checkpoints/<tag>/ and 'latest'."""
        full = self.state_io.gather()
        if self.is_main:
            state = {**run_state, "adam_step": full.adam_step, "loss_scaler": full.loss_scaler,
                     "plan": self.plan.summary(), "config": self.cfg.model_dump(mode="json")}
            write_run_checkpoint(self.ckpt_dir, tag, self.model_tensors(full), full.moments, state,
                                 self.metadata(run_state["step"]))
            prune_checkpoints(self.ckpt_dir, self.cfg.checkpoint.keep_last)
        return full

    def load(self) -> Loaded | None:
        """Collective: load the latest checkpoint into the engine and the model; None for a fresh run."""
        path = run_checkpoint_dir(self.ckpt_dir)
        if path is None:
            if (self.ckpt_dir / LATEST).is_file():
                raise ConfigError(
                    f"{self.ckpt_dir} holds a DeepSpeed per-rank checkpoint of an earlier usfmae, which cannot "
                    "move to another world size or this format. Continue from its weights in a new run directory: "
                    f"--set checkpoint.init_from={self.ckpt_dir} --output NEW_DIR")
            return None
        state, weights, moments = read_run_checkpoint(path)
        self.check_resumable(state, path)
        trainable = {n for n, _ in self.state_io.named}
        self.state_io.scatter(FullState({n: weights[n] for n in trainable}, moments, state["adam_step"],
                                        state.get("loss_scaler", {})))
        with torch.no_grad():  # the fixed tables: fp32 for the checkpoints, the engine's dtype in the model
            model_state = self.model.state_dict()
            for name in self.fixed:
                self.fixed[name] = weights[name].clone()
                model_state[name].copy_(weights[name])
        return Loaded(path, state)

    def check_resumable(self, state: dict, path: Path) -> None:
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
                  f"{saved['global_batch_size']} when {path.name} was saved: {p.batch.note}", flush=True)
        keys = ("total_steps", "warmup_steps") + (("peak_lr",) if saved["global_batch_size"] == p.global_batch else ())
        for key in keys:
            if saved[key] != p.summary()[key] and self.is_main:
                print(f"[usfmae] note: {key} was {saved[key]} when {path.name} was saved, now {p.summary()[key]} "
                      "(changed config)", flush=True)
