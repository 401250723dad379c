"""Pretraining under the real deepspeed launcher (2 CPU ranks): uneven shards, kill -9 and resume."""

import json
import os
import signal
import subprocess
import time

import pytest

from usfmae.ports import free_port

from helpers import BIN, REPO, run
from shardutil import make_shards

pytestmark = pytest.mark.slow

# Deliberately uneven: 2 ranks x 1 worker get very different sample counts from their shards.
SIZES = [40, 7, 23, 3, 31, 2]


def pretrain_cmd(shards, out, steps=14):
    return [BIN / "deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), REPO / "launch/pretrain.py",
            "--cpu", "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards, "--output", out,
            "--max-steps", str(steps), "--set", "deepspeed.micro_batch_size=8", "--set", "logging.every_steps=1",
            "--set", "logging.data_log=true", "--set", "checkpoint.every_steps=3", "--set", "checkpoint.keep_last=2",
            "--set", "logging.image_grid_every=0", "--set", "logging.tensorboard=false"]


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def steps_by_number(run_dir):
    return {r["step"]: r for r in records(run_dir) if "loss" in r}


def data_by_step(run_dir, rank):
    out = {}
    for line in (run_dir / "data" / f"rank{rank}.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.setdefault(r["step"], []).append(r)
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    shards = make_shards(tmp / "shards", SIZES)
    run(pretrain_cmd(shards, tmp / "full"), cwd=REPO)
    return shards, tmp / "full", tmp


def test_uneven_shards_finish_every_epoch(uninterrupted):
    _, full, _ = uninterrupted
    steps = steps_by_number(full)
    assert sorted(steps) == list(range(1, 15))
    start = next(r for r in records(full) if r.get("event") == "start")
    # 106 samples / (8 x 2 ranks) = 6 steps per epoch: 14 steps span 3 epochs on both ranks.
    assert start["world_size"] == 2 and start["steps_per_epoch"] == 6
    assert {r["epoch"] for r in steps.values()} == {0, 1, 2}
    for rank in (0, 1):
        per_step = data_by_step(full, rank)
        assert sorted(per_step) == list(range(14))  # every rank draws a batch for every step
        assert all(len(b["keys"]) == 8 for bs in per_step.values() for b in bs)
        # within an epoch a rank's stream never opens the same shard twice before it has run through all of its own
        for epoch in range(2):
            opened = [s for bs in per_step.values() for b in bs if b["epoch"] == epoch for s in b["new_shards"]]
            first_cycle = opened[:len(set(opened))]
            assert len(first_cycle) == len(set(first_cycle))


def test_kill_9_and_resume_matches_uninterrupted(uninterrupted):
    shards, full, tmp = uninterrupted
    out = tmp / "killed"
    proc = subprocess.Popen([str(c) for c in pretrain_cmd(shards, out)], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest.exists(), "the run ended before its first checkpoint"
    saved_step = int(latest.read_text().removeprefix("step"))
    assert saved_step < 14, "the run finished before it could be killed"

    run(pretrain_cmd(shards, out), cwd=REPO)
    resume = [r for r in records(out) if r.get("event") == "resume"]
    assert resume and resume[-1]["step"] == saved_step

    ref, got = steps_by_number(full), steps_by_number(out)
    assert sorted(got) == list(range(1, 15))
    for step in range(saved_step + 1, 15):
        assert got[step]["lr"] == pytest.approx(ref[step]["lr"], rel=1e-12)
        assert got[step]["loss"] == pytest.approx(ref[step]["loss"], rel=1e-5, abs=1e-6)
    # the same samples, step by step on every rank: nothing seen twice or skipped after the restart
    for rank in (0, 1):
        want, have = data_by_step(full, rank), data_by_step(out, rank)
        for step in range(saved_step, 14):
            assert [b["keys"] for b in have[step]][-1] == [b["keys"] for b in want[step]][-1]
