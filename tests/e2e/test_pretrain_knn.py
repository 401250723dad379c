"""The frozen-encoder k-NN monitor inside pretraining: config checks, log lines, TensorBoard, 2 ranks."""

import json
import os
import subprocess
import sys

import pytest

from usfmae.config import ConfigError, PretrainConfig, load_config
from usfmae.ports import free_port
from usfmae.testing.synthetic import write_labeled

from helpers import BIN, REPO, run
from shardutil import make_shards

KNN_KEYS = {"knn/knn_accuracy", "knn/knn_macro_f1", "knn/linear_accuracy", "knn/linear_macro_f1", "knn/images",
            "knn/seconds"}


def pretrain_args(shards, out, labeled, steps=4):
    return ["--cpu", "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards, "--output", out,
            "--max-steps", str(steps), "--set", "deepspeed.micro_batch_size=8", "--set", "logging.every_steps=1",
            "--set", "logging.knn_every=3", "--set", f"logging.knn_data={labeled}",
            "--set", "logging.image_grid_every=2", "--set", "checkpoint.every_steps=100"]


def test_knn_every_needs_knn_data():
    with pytest.raises(ConfigError, match=r"logging.knn_every=5 needs logging.knn_data"):
        load_config(PretrainConfig, REPO / "configs/pretrain_tiny.yaml", ["logging.knn_every=5"])
    cfg = load_config(PretrainConfig, REPO / "configs/pretrain_tiny.yaml", ["logging.knn_data=/somewhere"])
    assert cfg.logging.knn_every == 0  # a folder alone does not switch the monitor on


def test_missing_knn_folder_fails_at_start_up_naming_it(tmp_path):
    shards = make_shards(tmp_path / "shards", [16])
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    proc = subprocess.run([sys.executable, str(REPO / "launch/pretrain.py"),
                           *map(str, pretrain_args(shards, tmp_path / "run", tmp_path / "no_such_folder"))],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "logging.knn_data" in proc.stderr and str(tmp_path / "no_such_folder") in proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing was trained


@pytest.mark.slow
def test_knn_monitor_runs_beside_training_and_holds_no_rank(tmp_path):
    """The step-2 measurement cannot finish before training has logged step 4 (tests/scripts/pretrain_slow_knn.py):
    training goes on meanwhile, the step-4 measurement is skipped (the monitor is busy), the last runs at the end."""
    shards = make_shards(tmp_path / "shards", [20, 20, 16])
    labeled = write_labeled(tmp_path / "labeled", 8, size=64)  # 2 classes x 8 images
    out = tmp_path / "run"
    args = pretrain_args(shards, out, labeled, steps=5) + ["--set", "logging.knn_every=2"]
    run([BIN / "deepspeed", "--num_gpus", "2", "--master_port", str(free_port()),
         REPO / "tests/scripts/pretrain_slow_knn.py", *args], cwd=REPO,
        env={**os.environ, "KNN_WAIT_FOR": str(out / "metrics.jsonl"), "KNN_WAIT_STEP": "4"})
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in records if "knn/knn_accuracy" in r]
    assert [r["step"] for r in knn] == [2, 5]  # step 2 (late), step 4 skipped, the end
    assert [r["step"] for r in records if r.get("event") == "knn_skipped"] == [4]
    assert not [r for r in records if r.get("event") == "knn_failed"]
    order = [("knn", r["step"]) if "knn/knn_accuracy" in r else ("loss", r["step"]) for r in records
             if "knn/knn_accuracy" in r or "loss" in r]
    assert order.index(("loss", 4)) < order.index(("knn", 2))  # trained on while step 2 was measured
    for r in knn:
        assert KNN_KEYS <= set(r) and r["knn/images"] == 16
        assert all(0.0 <= r[k] <= 1.0 for k in KNN_KEYS - {"knn/images", "knn/seconds"})
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5]
    assert (out / "images/step00000002.png").is_file()  # grids still de-normalise uint8-loaded batches

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(out / "tensorboard"))
    tb.Reload()
    tags = set(tb.Tags()["scalars"])
    assert {"knn/knn_accuracy", "knn/linear_macro_f1", "pretrain/loss"} <= tags
    assert [e.step for e in tb.Scalars("knn/knn_accuracy")] == [2, 5]
