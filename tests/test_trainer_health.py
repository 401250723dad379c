"""Run health under the real deepspeed launcher: init_from a reference-format state dict, non-finite losses."""

import json
import os
import subprocess

import pytest
import torch

from usfmae.model import create_model

from conftest import BIN, REPO, free_port
from shardutil import make_shards

pytestmark = pytest.mark.slow


def test_init_from_reference_state_dict_then_stop_on_non_finite_losses(tmp_path):
    shards = make_shards(tmp_path / "shards", [20, 20])
    torch.manual_seed(123)
    ref = create_model("mae_vit_tiny_patch8", img_size=32)  # a different grid: pos embeds are interpolated
    torch.save({"model": ref.state_dict(), "epoch": 10}, tmp_path / "mae_reference.pth")
    out = tmp_path / "run"
    cmd = [BIN / "deepspeed", "--num_gpus", "1", "--master_port", str(free_port()),
           REPO / "tests/scripts/pretrain_nan.py", "--cpu", "--config", REPO / "configs/pretrain_tiny.yaml",
           "--shards", shards, "--output", out, "--max-steps", "40",
           "--set", "deepspeed.micro_batch_size=8", "--set", "logging.every_steps=1",
           "--set", "checkpoint.every_steps=2", "--set", "checkpoint.max_bad_steps=3",
           "--set", f"checkpoint.init_from={tmp_path / 'mae_reference.pth'}", "--set", "logging.tensorboard=true"]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "NAN_AFTER": "5"})
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "adapted: pos_embed [1, 17, 96]->[1, 65, 96]" in log
    assert "0 missing, 0 unexpected keys" in log
    assert "3 consecutive non-finite losses at step 5" in log and "last good checkpoint" in log
    assert (out / "checkpoints/latest").read_text() == "step00000004"
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r] == [1, 2, 3, 4, 5]
    assert list((out / "tensorboard").iterdir()), "TensorBoard event files are written"
