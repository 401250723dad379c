"""Cluster-scale pretraining on CPU ranks under the real deepspeed launcher: a run saved on 2 ranks resumes
on 1 then 3 (AdamW state carried, every sample of an epoch once), every ZeRO stage ends with a complete fp32
export, ranks that do not share the run directory stop, and --dry-run plans without training."""

import json
import subprocess
import sys
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from usfmae.checkpoint import read_run_checkpoint
from usfmae.model import create_model
from usfmae.model.pos_embed import sincos_2d
from usfmae.ports import free_port
from usfmae.train.fullstate import FullState, digest

from helpers import BIN, REPO, run
from shardutil import make_shards

SIZES = [40, 7, 23, 3, 31, 2]  # 106 samples, deliberately uneven


def pretrain(ranks, shards, out, *sets, script="launch/pretrain.py", check=True):
    cmd = [BIN / "deepspeed", "--num_gpus", str(ranks), "--master_port", str(free_port()), REPO / script, "--cpu",
           "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards, "--output", out,
           "--set", "logging.every_steps=1", "--set", "logging.tensorboard=false", "--set", "logging.image_grid_every=0"]
    cmd += [x for s in sets for x in ("--set", s)]
    if check:
        return run(cmd, cwd=REPO)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, cwd=REPO)


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_digest(path):
    state, weights, moments = read_run_checkpoint(path)
    trainable = {n for n, p in create_model("mae_vit_tiny_patch8").named_parameters() if p.requires_grad}
    return digest(FullState({n: weights[n] for n in trainable}, moments, state["adam_step"]))


@pytest.mark.slow
def test_resume_on_2_then_1_then_3_ranks(tmp_path):
    shards = make_shards(tmp_path / "shards", SIZES)
    out = tmp_path / "run"
    # global batch 24 = 4 images x 3 accumulation x 2 ranks = 4 x 6 x 1 = 4 x 2 x 3; 106 // 24 = 4 steps per epoch
    common = ["deepspeed.global_batch_size=24", "deepspeed.micro_batch_size=4", "schedule.epochs=2",
              "logging.data_log=true", "checkpoint.every_steps=100"]
    pretrain(2, shards, out, *common, "schedule.stop_at_step=2")  # stops inside epoch 0
    saved_2 = checkpoint_digest(out / "checkpoints/step00000002")
    pretrain(1, shards, out, *common, "schedule.stop_at_step=5")  # finishes epoch 0, stops inside epoch 1
    saved_5 = checkpoint_digest(out / "checkpoints/step00000005")
    pretrain(3, shards, out, *common)

    recs = records(out)
    resumes = [r for r in recs if r.get("event") == "resume"]
    assert [(r["step"], r["saved_world_size"], r["world_size"]) for r in resumes] == [(2, 2, 1), (5, 1, 3)]
    # what each engine holds after loading (gathered back from its partitions) is what was saved
    assert resumes[0]["state_digest"] == saved_2 and resumes[1]["state_digest"] == saved_5
    assert saved_2["adam_step"] == 2 and saved_5["adam_step"] == 5 and saved_5["exp_avg_sq"] > 0
    starts = [r for r in recs if r.get("event") == "start"]
    assert [(s["world_size"], s["grad_accum_steps"]) for s in starts] == [(2, 3), (1, 6), (3, 2)]
    assert {(s["global_batch_size"], s["total_steps"], s["warmup_steps"], s["peak_lr"]) for s in starts} == {(24, 8, 1, 1.5e-3)}
    steps = {r["step"]: r for r in recs if "loss" in r}
    assert sorted(steps) == list(range(1, 9)) and steps[8]["epoch"] == 1
    final = checkpoint_digest(out / "checkpoints/step00000008")
    assert final["adam_step"] == 8  # AdamW's bias correction never restarted

    # every sample of each epoch seen exactly once, across the three world sizes (106 - 4 x 24 = 10 wait)
    seen = [json.loads(x) for f in sorted((out / "data").glob("rank*.jsonl")) for x in f.read_text().splitlines()]
    assert {f.name for f in (out / "data").iterdir()} == {"rank0.jsonl", "rank1.jsonl", "rank2.jsonl"}
    for epoch in (0, 1):
        keys = Counter(k for r in seen if r["epoch"] == epoch for k in r["keys"])
        assert sum(keys.values()) == 96 and max(keys.values()) == 1
    model = create_model("mae_vit_tiny_patch8")
    model.load_state_dict(load_file(out / "model.safetensors"), strict=True)


def exact_sincos(state):
    grid = int((state["pos_embed"].shape[1] - 1) ** 0.5)
    return (torch.equal(state["pos_embed"][0], sincos_2d(state["pos_embed"].shape[-1], grid, cls_token=True)) and
            torch.equal(state["decoder_pos_embed"][0],
                        sincos_2d(state["decoder_pos_embed"].shape[-1], grid, cls_token=True)))


@pytest.mark.slow
@pytest.mark.parametrize("stage,precision", [(0, "fp32"), (1, "bf16"), (2, "fp16")])
def test_every_zero_stage_resumes_and_ends_with_a_complete_fp32_export(tmp_path, stage, precision):
    """bf16 and fp16 run on CPU ranks too (DeepSpeed's CPU accelerator), so their paths are exercised here:
    fp16 inputs in the parameter dtype with loss scaling (its state carried over a resume), bf16 with
    accumulation in fp32 (stage 1: DeepSpeed's BF16_Optimizer)."""
    shards = make_shards(tmp_path / "shards", [24, 24])
    out = tmp_path / "run"
    sets = [f"deepspeed.zero_stage={stage}", f"deepspeed.precision={precision}", "deepspeed.micro_batch_size=4",
            "deepspeed.global_batch_size=16", "schedule.max_steps=3", "checkpoint.keep_last=5"]
    pretrain(2, shards, out, *sets, "schedule.stop_at_step=2")
    pretrain(2, shards, out, *sets)
    recs = records(out)
    start = next(r for r in recs if r.get("event") == "start")
    assert start["precision"] == precision and start["grad_accum_steps"] == 2
    resume = next(r for r in recs if r.get("event") == "resume")
    assert resume["state_digest"] == checkpoint_digest(out / "checkpoints/step00000002")
    state = load_file(out / "model.safetensors")
    create_model("mae_vit_tiny_patch8").load_state_dict(state, strict=True)
    assert all(v.dtype == torch.float32 for v in state.values())
    assert exact_sincos(state)  # the fixed tables as built, not rounded through bf16/fp16
    trained = [r for r in recs if "loss" in r]
    assert [r["step"] for r in trained] == [1, 2, 3]
    if precision == "fp16":
        assert all("loss_scale" in r for r in trained)
        scaler = [read_run_checkpoint(out / f"checkpoints/step{s:08d}")[0]["loss_scaler"] for s in (2, 3)]
        assert scaler[1]["cur_iter"] == scaler[0]["cur_iter"] + 1  # the loss scaler went on, not restarted
    ref = read_run_checkpoint(out / "checkpoints/step00000003")[1]
    assert all(torch.equal(ref[k], state[k]) for k in state)  # the export is the last checkpoint's weights


@pytest.mark.slow
def test_ranks_that_do_not_share_the_run_directory_stop(tmp_path):
    shards = make_shards(tmp_path / "shards", [24, 24])
    out = tmp_path / "run"
    proc = pretrain(2, shards, out, "deepspeed.micro_batch_size=4", script="tests/scripts/pretrain_local_dirs.py",
                    check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "is not shared by all ranks: rank 1 on" in log and "A node-local folder cannot hold a multi-node run" in log
    assert "--output s3://bucket/run" in log and "a filesystem every node mounts" in log  # what to use instead
    assert log.count("error: the run directory") == 2  # both ranks stop with the same message
    for rank in (0, 1):
        assert not (out / f"rank{rank}" / "metrics.jsonl").exists()  # nothing trained


def test_dry_run_prints_the_plan_without_training(tmp_path):
    shards = make_shards(tmp_path / "shards", [40, 24])
    args = [sys.executable, REPO / "launch/pretrain.py", "--dry-run", "--config", REPO / "configs/pretrain_vitb16.yaml",
            "--shards", shards, "--output", tmp_path / "run", "--set", "data.epoch_samples=374192"]
    plan = json.loads(run(args + ["--world-size", "8"]).stdout)
    assert (plan["world_size"], plan["global_batch_size"], plan["micro_batch_size"], plan["grad_accum_steps"]) == (8, 64, 8, 1)
    assert (plan["peak_lr"], plan["steps_per_epoch"], plan["total_steps"], plan["warmup_steps"]) == (1e-3, 5846, 584600, 58460)
    assert plan["precision"] == "bf16" and "precision_note" in plan and plan["timeout_minutes"] == 30
    assert plan["deepspeed_config"]["train_batch_size"] == 64 and plan["deepspeed_config"]["zero_optimization"]["stage"] == 2
    assert not (tmp_path / "run").exists()  # nothing written, no process group
    bad = subprocess.run([str(a) for a in args + ["--world-size", "3"]], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "deepspeed.global_batch_size=64 cannot be realised on 3 ranks" in bad.stderr
    via_cli = run([BIN / "usfmae", "pretrain", "--dry-run", "--nproc", "4", *map(str, args[3:])])
    assert json.loads(via_cli.stdout)["micro_batch_size"] == 16
