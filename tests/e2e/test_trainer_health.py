"""Run health under the real deepspeed launcher: init_from a reference-format state dict and the stop after
checkpoint.max_bad_steps, read at the next sync point. (Non-finite losses skipped on every rank at each ZeRO
stage and precision: tests/e2e/test_elastic.py, in the same launcher runs as resume and export.)"""

import os
import subprocess

import pytest
import torch

from usfmae.model import create_model
from usfmae.ports import free_port

from helpers import BIN, REPO
from shardutil import make_shards
from test_elastic import records

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
