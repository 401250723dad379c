"""Multi-node launch through a DeepSpeed hostfile, on this one machine over loopback.

The launcher's default multi-node path needs passwordless ssh (it first runs `ssh HOST hostname`) and pdsh,
which a test machine need not have, so these tests use the two forms that need neither, exactly as the
README documents them:
  - one hostfile entry with 2 slots, `--no_ssh_check --master_addr 127.0.0.1`: the launcher sees a single
    host and starts both ranks locally;
  - two hostfile entries ("nodes") of 1 slot each, `--no_ssh --node_rank N --master_addr 127.0.0.1`: one
    launcher per node, as on a cluster without ssh, meeting at the master's address.
"""

import json
import os
import signal
import subprocess

import cv2
import pytest
import webdataset as wds

from usfmae.ports import free_port
from usfmae.testing.synthetic import generate_ultrasound

from helpers import BIN, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shards of 16 small synthetic scans (PNG + JSON per sample, as build_shards.py writes them)."""
    out = tmp_path_factory.mktemp("shards")
    for s in range(2):
        with wds.TarWriter(str(out / f"shard-{s:06d}.tar")) as sink:
            for i in range(16):
                rgb = generate_ultrasound(100 * s + i, 64).image
                ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                assert ok
                sink.write({"__key__": f"s{s}_{i:04d}", "png": png.tobytes(), "json": b'{"dataset": "synthetic"}'})
    return out


def pretrain_args(shards, out) -> list[str]:
    return [str(REPO / "launch/pretrain.py"), "--cpu", "--config", str(REPO / "configs/pretrain_tiny.yaml"),
            "--shards", f"{shards}/*.tar", "--output", str(out), "--max-steps", "2",  # no manifest: tars named
            "--set", "logging.every_steps=1", "--set", "logging.tensorboard=false",
            "--set", "logging.image_grid_every=0"]


def check_run(out) -> None:
    """Two optimizer steps over 2 ranks, each rank drawing 16 images per step."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "start")
    assert start["world_size"] == 2
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert steps[-1]["samples_seen"] == 2 * 16 * 2
    assert records[-1]["event"] == "end" and (out / "model.safetensors").is_file()


def finish(proc: subprocess.Popen, timeout: int = 900) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the ranks it started
        out, _ = proc.communicate()
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}\n{out[-6000:]}"
    return out


def launch(args: list, cwd=REPO) -> subprocess.Popen:
    return subprocess.Popen([str(a) for a in args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def test_hostfile_single_host_two_slots(tmp_path, shards):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    out = tmp_path / "run"
    finish(launch([BIN / "deepspeed", "--hostfile", hostfile, "--no_ssh_check", "--master_addr", "127.0.0.1",
                   "--master_port", free_port(), *pretrain_args(shards, out)]))
    check_run(out)


def test_hostfile_two_nodes_without_ssh(tmp_path, shards):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    out, port = tmp_path / "run", free_port()
    nodes = [launch([BIN / "deepspeed", "--hostfile", hostfile, "--no_ssh", "--node_rank", rank,
                     "--master_addr", "127.0.0.1", "--master_port", port, *pretrain_args(shards, out)])
             for rank in (0, 1)]
    logs = [finish(p) for p in nodes]
    check_run(out)
    for rank, log in enumerate(logs):  # each launcher started one process, for its own node
        assert f"nnodes=2, num_local_procs=1, node_rank={rank}" in log
