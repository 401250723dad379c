"""The distributed paths across real (simulated) hosts: network namespaces with their own addresses, node-local
/node folders and S3 on the bridge (usfmae.testing.hosts), started with the commands of README "Running on a
cluster". Skipped without root or iproute2 (CI runs as root)."""

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import boto3
import pytest

from usfmae.testing.corpus import write_images
from usfmae.testing.synthetic import write_labeled

from helpers import BIN, REPO
from shardutil import make_shards

pytestmark = pytest.mark.slow

SIZES = [40, 7, 23, 3, 31, 2]  # 106 samples; global batch 8: 13 steps per epoch, 2 left over
PRETRAIN = ["--cpu", "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", "s3://data/shards",
            "--set", "logging.every_steps=1", "--set", "logging.tensorboard=false", "--set", "logging.image_grid_every=0",
            "--set", "deepspeed.global_batch_size=8", "--set", "deepspeed.micro_batch_size=4",
            "--set", "schedule.epochs=1", "--set", "logging.data_log=true", "--set", "checkpoint.every_steps=2",
            "--set", "checkpoint.keep_last=10"]


def s3(box):
    return boto3.client("s3", endpoint_url=box.s3_url, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def upload(box, folder: Path, bucket: str, prefix: str) -> None:
    client = s3(box)
    client.create_bucket(Bucket=bucket)
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")


def launchers(box, hostfile: Path, hosts: list[int], output, logs: Path) -> list[subprocess.Popen]:
    """`deepspeed --no_ssh --node_rank N` on each host, as README "Running on a cluster" shows."""
    port = 29500  # every host has its own ports: the cluster's usual master port is free
    return [box.popen(i, [BIN / "deepspeed", "--hostfile", hostfile, "--no_ssh", "--node_rank", n,
                          "--master_addr", box.addresses[hosts[0]], "--master_port", port, REPO / "launch/pretrain.py",
                          *PRETRAIN, "--output", output], log=logs / f"host{i}.log", cwd=REPO)
            for n, i in enumerate(hosts)]


def wait(proc: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{log.name} still running after {timeout} s:\n{log.read_text()[-4000:]}")
    return log.read_text()


def test_deepspeed_across_hosts_loses_a_node_resumes_on_one_and_finetunes(host_box, tmp_path):
    box = host_box
    upload(box, make_shards(tmp_path / "shards", SIZES), "data", "shards")
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(f"{box.namespace(0)} slots=1\n{box.namespace(1)} slots=1\n")
    logs = tmp_path / "logs"
    logs.mkdir()

    # a node-local run directory (/node is a different folder on each host) is refused on every rank; started
    # as SLURM or Kubernetes would, with the torchrun-style environment and no launcher
    env = {"MASTER_ADDR": box.addresses[0], "MASTER_PORT": "29500", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    local = [box.popen(i, [BIN / "python", REPO / "launch/pretrain.py", *PRETRAIN, "--output", "/node/run"],
                       log=logs / f"env{i}.log", env=box.env({**env, "RANK": str(i)}), cwd=REPO) for i in (0, 1)]
    for i, proc in enumerate(local):
        text = wait(proc, logs / f"env{i}.log")
        assert proc.returncode == 2 and "error: the run directory /node/run is not shared by all ranks" in text
        assert f"rank 1 on {box.namespace(1)}" in text and "put --output on S3 (--output s3://bucket/run" in text
    assert (box.node(0) / "run").is_dir() and not list((box.node(0) / "run").glob("*.jsonl"))
    assert not (box.node(1) / "run").exists()  # rank 1 looked for rank 0's file in its own /node: not there

    # 2 hosts x 1 rank, the run directory on S3; host 1 is killed after the first checkpoint
    client = s3(box)
    client.create_bucket(Bucket="runs")
    run = "s3://runs/run"
    nodes = launchers(box, hostfile, [0, 1], run, logs)
    while not client.list_objects_v2(Bucket="runs", Prefix="run/checkpoints/latest").get("KeyCount"):
        assert nodes[0].poll() is None, (logs / "host0.log").read_text()[-4000:]
        time.sleep(0.05)
    box.kill(1)
    text = wait(nodes[0], logs / "host0.log")  # within the heartbeat bound at most, not the 30-min timeout
    assert nodes[0].returncode != 0 and nodes[1].wait() == -signal.SIGKILL
    assert f"error: lost rank 1 on {box.namespace(1)} ({box.addresses[1]})" in text
    stored = objects(box, "runs", "run")
    saved = stored["checkpoints/latest"].decode().strip()
    step = int(saved.removeprefix("step"))
    seen_2 = [json.loads(x) for name in ("data/rank0.jsonl", "data/rank1.jsonl")
              for x in stored[name].decode().splitlines()]  # as uploaded with the checkpoint

    # host 0 alone resumes from the last checkpoint and finishes the epoch, while host 1 (rebooted) fine-tunes
    # from the checkpoint the 2-host run wrote
    (tmp_path / "hostfile1").write_text(f"{box.namespace(0)} slots=1\n")
    alone = launchers(box, tmp_path / "hostfile1", [0], run, logs)[0]
    ft = box.popen(1, [BIN / "python", REPO / "launch/finetune.py", "--checkpoint",
                       f"{run}/checkpoints/{saved}/model.safetensors", "--data",
                       write_labeled(tmp_path / "labeled", 8, seed=3, size=64), "--output", tmp_path / "ft",
                       "--set", "epochs=1", "--set", "batch_size=8", "--set", "num_workers=0"],
                   log=logs / "ft.log", cwd=REPO)
    text = wait(alone, logs / "host0.log")
    assert alone.returncode == 0, text[-4000:]
    assert "[finetune] F1" in wait(ft, logs / "ft.log") and ft.returncode == 0
    assert (tmp_path / "ft/metrics.json").is_file()
    stored = objects(box, "runs", "run")
    recs = [json.loads(x) for x in stored["metrics.jsonl"].decode().splitlines()]
    resume = next(r for r in recs if r.get("event") == "resume")
    assert (resume["step"], resume["saved_world_size"], resume["world_size"]) == (step, 2, 1)
    assert recs[-1]["event"] == "end" and "model.safetensors" in stored

    # every sample of the epoch trained on exactly once: the 2-host run's steps up to its checkpoint, then host
    # 0's (the last 2 micro-batches per step of its data log: 1 rank accumulates 2 x 4 images)
    alone_seen = [json.loads(x) for x in stored["data/rank0.jsonl"].decode().splitlines()][-(13 - step) * 2:]
    assert sorted({r["step"] for r in alone_seen}) == list(range(step, 13))
    keys = Counter(k for r in [*(r for r in seen_2 if r["step"] < step), *alone_seen] for k in r["keys"])
    assert sum(keys.values()) == 13 * 8 and max(keys.values()) == 1


def ray_node(box, i: int, logs: Path) -> subprocess.Popen:
    """`ray start --block` on host i: the head on host 0, a worker joining it from host 1 (README "Running on a
    cluster"); the session lives in the host's node-local /node."""
    head = box.addresses[0]
    args = ["--head", f"--port={RAY_PORT}", f"--dashboard-host={head}", f"--dashboard-port={JOBS_PORT}"] if i == 0 \
        else [f"--address={head}:{RAY_PORT}"]
    log = logs / f"ray{i}.log"
    proc = box.popen(i, [BIN / "ray", "start", "--block", f"--node-ip-address={box.addresses[i]}", "--num-cpus=1",
                         "--disable-usage-stats", "--temp-dir=/node/ray", *args], log=log)
    while "block forever" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-4000:]
        time.sleep(0.2)
    return proc


def objects(box, bucket: str, prefix: str) -> dict[str, bytes]:
    client = s3(box)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
            for o in page.get("Contents", [])]
    return {k[len(prefix) + 1:]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


RAY_PORT, JOBS_PORT = 6379, 8265  # every host has its own ports: Ray's defaults are free


def test_ray_build_across_hosts_survives_losing_a_worker(host_box, tmp_path):
    box = host_box
    write_images(tmp_path / "in", 24, 96, seed=7)  # 12 shards: host 1 finishes one while others remain
    s3(box).create_bucket(Bucket="shards")
    logs = tmp_path / "logs"
    logs.mkdir()
    ray_node(box, 0, logs)
    ray_node(box, 1, logs)

    def submit(prefix: str) -> subprocess.Popen:
        return box.popen(0, [BIN / "ray", "job", "submit", f"--address=http://{box.addresses[0]}:{JOBS_PORT}", "--",
                             BIN / "python", REPO / "preprocessing/build_shards.py", "--input", tmp_path / "in",
                             "--output", f"s3://shards/{prefix}", "--shard-size", "2", "--no-clean",
                             "--set", "salt=multi-host"], log=logs / f"{prefix}.log", cwd=REPO)

    clean = submit("clean")
    text = wait(clean, logs / "clean.log")
    assert clean.returncode == 0 and "[build] done: 24 samples" in text, text[-4000:]
    ref = objects(box, "shards", "clean")
    report = json.loads(ref["report.json"])
    assert set(report["nodes"]) == set(box.addresses)  # shard tasks ran on both hosts

    killed = submit("killed")
    staging, client = box.node(1) / "tmp", s3(box)
    mid = []
    while not mid:  # host 1 is writing a shard: its tar is staged in its node-local TMPDIR
        assert killed.poll() is None, (logs / "killed.log").read_text()[-4000:]
        mid = [p.name for p in staging.glob(".shard-*.tar.tmp*")] if staging.is_dir() else []
        time.sleep(0.02)
    box.kill(1)
    in_flight = mid[0].removeprefix(".").split(".tmp")[0]  # the shard host 1 was writing
    cut_short = (staging / mid[0]).exists()  # false only if it finished between the glob and the kill
    done = client.list_objects_v2(Bucket="shards", Prefix="killed/_parts/").get("Contents", [])
    assert len(done) < 12  # shards were left to build
    text = wait(killed, logs / "killed.log")
    assert killed.returncode == 0 and "[build] done: 24 samples" in text, text[-4000:]
    got = objects(box, "shards", "killed")
    assert sorted(got) == sorted(ref)  # nothing missing, nothing extra (no temp objects, no doubles)
    assert {k: v for k, v in got.items() if k.endswith((".tar", "manifest.json"))} == \
        {k: v for k, v in ref.items() if k.endswith((".tar", "manifest.json"))}
    nodes = json.loads(got["report.json"])["nodes"]
    assert in_flight in nodes[box.addresses[0]] or not cut_short  # host 0 built what host 1 left half-written
    assert sum(map(len, nodes.values())) == 12
