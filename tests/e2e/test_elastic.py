"""Cluster-scale pretraining on CPU ranks under the real deepspeed launcher: a run saved on 2 ranks resumes
on 1 then 3 (AdamW state carried, every sample of an epoch once), every ZeRO stage skips non-finite steps on
every rank, resumes and ends with a complete fp32 export, ranks that do not share the run directory stop, fp16
where the CPU lacks it stops at start-up, and --dry-run plans without training."""

import json
import os
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
from usfmae.train.device import cpu_supports

from helpers import BIN, REPO, checkpoint_digest, cpu_ranks_run, run
from shardutil import make_shards

SIZES = [40, 7, 23, 3, 31, 2]  # 106 samples, deliberately uneven


def pretrain(ranks, shards, out, *sets, script="launch/pretrain.py", check=True, env=None):
    cmd = [BIN / "deepspeed", "--num_gpus", str(ranks), "--master_port", str(free_port()), REPO / script, "--cpu",
           "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards, "--output", out,
           "--set", "logging.every_steps=1", "--set", "logging.tensorboard=false", "--set", "logging.image_grid_every=0"]
    cmd += [x for s in sets for x in ("--set", s)]
    env = {**os.environ, **(env or {})}
    if check:
        return run(cmd, cwd=REPO, env=env)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


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
@pytest.mark.parametrize("stage,precision", [pytest.param(s, p, marks=cpu_ranks_run(p))
                                             for s, p in [(0, "fp32"), (1, "bf16"), (2, "fp16")]])
def test_every_zero_stage_skips_non_finite_steps_resumes_and_ends_with_a_complete_fp32_export(tmp_path, stage,
                                                                                            precision):
    """Rank 1's losses are NaN in steps 5-8 (its forward passes 9-16, 2 per step): those steps are skipped on
    both ranks, the weights and AdamW state at step 8 are those of step 4. Skipping is DeepSpeed's at ZeRO 1
    (bf16 with fp32 accumulation: its BF16_Optimizer) and 2 (fp16: its overflow check), ours at ZeRO 0
    (found_inf); the count is read at step 8, the next sync point, four steps at once. The run stops there and
    resumes (the engine holds what was saved, the skip count and fp16's loss scaler go on) to a complete fp32
    export. bf16 and fp16 run here where DeepSpeed's CPU accelerator has them; elsewhere the fp16 logic is
    covered in-process with the capability patched (tests/unit/train/test_engine_hotpath.py)."""
    shards = make_shards(tmp_path / "shards", [24, 24])
    out = tmp_path / "run"
    sets = [f"deepspeed.zero_stage={stage}", f"deepspeed.precision={precision}", "deepspeed.micro_batch_size=4",
            "deepspeed.global_batch_size=16", "schedule.max_steps=10", "logging.every_steps=4",
            "checkpoint.every_steps=4", "checkpoint.keep_last=5", "checkpoint.max_bad_steps=10"]
    nan = {"NAN_AFTER": "8", "NAN_UNTIL": "16", "NAN_RANK": "1"}
    first = pretrain(2, shards, out, *sets, "schedule.stop_at_step=8", script="tests/scripts/pretrain_nan.py", env=nan)
    assert "steps 5-8: 4 skipped (non-finite loss), 4 in a row now" in first.stdout + first.stderr
    pretrain(2, shards, out, *sets, script="tests/scripts/pretrain_nan.py", env=nan)  # its passes 1-4: finite
    recs = records(out)
    start = next(r for r in recs if r.get("event") == "start")
    assert start["precision"] == precision and start["grad_accum_steps"] == 2
    digests = {s: checkpoint_digest(out / f"checkpoints/step{s:08d}") for s in (4, 8, 10)}
    assert digests[8] == digests[4] and digests[10] != digests[8]
    resume = next(r for r in recs if r.get("event") == "resume")
    assert resume["step"] == 8 and resume["state_digest"] == digests[8]
    logged = {r["step"]: r for r in recs if "loss" in r}
    assert [(s, logged[s]["skipped_steps"]) for s in sorted(logged)] == [(4, 0), (8, 4), (10, 4)]
    # rank 1's NaN micro-batches are left out of the mean; rank 0's still count
    assert all(isinstance(logged[s]["loss"], float) for s in (4, 8, 10))
    state = load_file(out / "model.safetensors")
    create_model("mae_vit_tiny_patch8").load_state_dict(state, strict=True)
    assert all(v.dtype == torch.float32 for v in state.values())
    assert exact_sincos(state)  # the fixed tables as built, not rounded through bf16/fp16
    if precision == "fp16":
        assert all("loss_scale" in r for r in logged.values())
        scaler = [read_run_checkpoint(out / f"checkpoints/step{s:08d}")[0]["loss_scaler"] for s in (8, 10)]
        assert scaler[1]["cur_iter"] == scaler[0]["cur_iter"] + 2  # the loss scaler went on, not restarted
    ref = read_run_checkpoint(out / "checkpoints/step00000010")[1]
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


@pytest.mark.slow
@pytest.mark.skipif(cpu_supports("fp16"), reason="DeepSpeed's accelerator reports is_fp16_supported() true on this "
                    "CPU: nothing to refuse (the refusal is tested with the capability patched in tests/unit/train)")
def test_fp16_on_cpu_ranks_without_it_stops_at_start_up(tmp_path):
    shards = make_shards(tmp_path / "shards", [24])
    proc = pretrain(2, shards, tmp_path / "run", "deepspeed.precision=fp16", "deepspeed.micro_batch_size=4",
                    check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-3000:]
    assert log.count("error: deepspeed.precision=fp16 on CPU ranks") == 2  # each rank, before DeepSpeed's own check
    assert "use --set deepspeed.precision=bf16" in log and "not supported on your device" not in log
    assert not (tmp_path / "run").exists()


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
    assert plan["batch_rule"] == "exact"
    near = json.loads(run(args + ["--world-size", "3"]).stdout)  # 64 is not 3 whole micro-batches: the nearest, 63
    assert (near["global_batch_size"], near["micro_batch_size"], near["batch_rule"]) == (63, 21, "nearest")
    assert near["peak_lr"] == 1e-3 * 63 / 64 and near["total_steps"] == 584600  # lr scaled, the planned schedule
    assert "nearest realisable global batch 63" in near["batch_note"]
    via_cli = run([BIN / "usfmae", "pretrain", "--dry-run", "--nproc", "4", *map(str, args[3:])])
    assert json.loads(via_cli.stdout)["micro_batch_size"] == 16
