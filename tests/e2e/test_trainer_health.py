"""Run health under the real deepspeed launcher: init_from a reference-format state dict, non-finite losses
skipped on every rank (ZeRO 0, 1 and 2; fp32, bf16 and fp16) and the stop after checkpoint.max_bad_steps, read
at the next sync point."""

import json
import os
import subprocess

import pytest
import torch

from usfmae.model import create_model
from usfmae.ports import free_port

from helpers import BIN, REPO, cpu_ranks_run
from shardutil import make_shards
from test_elastic import checkpoint_digest, records

pytestmark = pytest.mark.slow


def pretrain_nan(ranks, shards, out, env, *sets):
    cmd = [BIN / "deepspeed", "--num_gpus", str(ranks), "--master_port", str(free_port()),
           REPO / "tests/scripts/pretrain_nan.py", "--cpu", "--config", REPO / "configs/pretrain_tiny.yaml",
           "--shards", shards, "--output", out, "--set", "logging.tensorboard=true", "--set", "logging.image_grid_every=0",
           *[x for s in sets for x in ("--set", s)]]
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, **env})


def test_init_from_reference_state_dict_then_stop_on_non_finite_losses(tmp_path):
    shards = make_shards(tmp_path / "shards", [20, 20])
    torch.manual_seed(123)
    ref = create_model("mae_vit_tiny_patch8", img_size=32)  # a different grid: pos embeds are interpolated
    torch.save({"model": ref.state_dict(), "epoch": 10}, tmp_path / "mae_reference.pth")
    out = tmp_path / "run"
    # non-finite from step 6 on; sync points (logging every 4, checkpoints every 3): 3, 4, 6, 8
    proc = pretrain_nan(1, shards, out, {"NAN_AFTER": "5"}, "schedule.max_steps=40", "deepspeed.micro_batch_size=8",
                        "logging.every_steps=4", "checkpoint.every_steps=3", "checkpoint.max_bad_steps=2",
                        f"checkpoint.init_from={tmp_path / 'mae_reference.pth'}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 3, log[-3000:]
    assert "adapted: pos_embed [1, 17, 96]->[1, 65, 96]" in log
    assert "0 missing, 0 unexpected keys" in log
    # the second in a row is step 7, read at step 8 (the next sync point): the stop comes one step late
    assert "2 consecutive non-finite losses at step 7 (read at step 8" in log and "last good checkpoint" in log
    assert "steps 5-6: 1 skipped (non-finite loss), 1 in a row now" in log
    assert (out / "checkpoints/latest").read_text() == "step00000006"  # at step 6 the run was one bad step in
    logged = {r["step"]: r for r in records(out) if "loss" in r}
    assert sorted(logged) == [3, 4, 6] and logged[6]["skipped_steps"] == 1
    assert isinstance(logged[6]["loss"], float) and logged[4]["skipped_steps"] == 0  # step 6's left out: step 5's
    assert list((out / "tensorboard").iterdir()), "TensorBoard event files are written"


@pytest.mark.parametrize("stage,precision", [pytest.param(s, p, marks=cpu_ranks_run(p))
                                             for s, p in [(0, "fp32"), (1, "bf16"), (2, "fp16")]])
def test_a_rank_with_non_finite_losses_skips_the_step_on_every_rank(tmp_path, stage, precision):
    """Rank 1's losses are NaN in steps 5-8 (its forward passes 9-16, 2 per step): those steps are skipped on
    both ranks, the weights and AdamW state at step 8 are those of step 4, and training goes on. Skipping is
    DeepSpeed's at ZeRO 1 (bf16 with fp32 accumulation: its BF16_Optimizer) and 2 (fp16: its overflow check),
    ours at ZeRO 0 (found_inf); the count is read at step 8, the next sync point, four steps at once."""
    shards = make_shards(tmp_path / "shards", [24, 24])
    out = tmp_path / "run"
    proc = pretrain_nan(2, shards, out, {"NAN_AFTER": "8", "NAN_UNTIL": "16", "NAN_RANK": "1"},
                        f"deepspeed.zero_stage={stage}", f"deepspeed.precision={precision}", "schedule.max_steps=12",
                        "deepspeed.micro_batch_size=4", "deepspeed.global_batch_size=16", "logging.every_steps=4",
                        "checkpoint.every_steps=4", "checkpoint.keep_last=5", "checkpoint.max_bad_steps=10")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "steps 5-8: 4 skipped (non-finite loss), 4 in a row now" in log
    assert checkpoint_digest(out / "checkpoints/step00000008") == checkpoint_digest(out / "checkpoints/step00000004")
    assert checkpoint_digest(out / "checkpoints/step00000012") != checkpoint_digest(out / "checkpoints/step00000008")
    logged = {r["step"]: r for r in records(out) if "loss" in r}
    assert [(s, logged[s]["skipped_steps"]) for s in sorted(logged)] == [(4, 0), (8, 4), (12, 4)]
    # rank 1's NaN micro-batches are left out of the mean; rank 0's still count
    assert all(isinstance(logged[s]["loss"], float) for s in (4, 8, 12))
    start = next(r for r in records(out) if r.get("event") == "start")
    assert start["precision"] == precision and start["grad_accum_steps"] == 2
