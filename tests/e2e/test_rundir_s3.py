"""A run directory on S3 (moto's real HTTP server), under the real deepspeed launcher with 2 CPU ranks.

One run in three launches, each with its own node-local scratch (as on another node): stopped at step 2;
killed while its step-4 checkpoint is half uploaded (the server holds that upload); resumed from step 2 and
finished. Then fine-tuning starts from the run's export and from its checkpoint on S3.
"""

import json
import os
import signal
import subprocess
import threading

import boto3
import pytest
import torch
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from usfmae.checkpoint import read_run_checkpoint
from usfmae.data.s3 import ENDPOINT_ENV
from usfmae.ports import free_port
from usfmae.testing.s3proxy import empty_moto

from helpers import BIN, REPO, run
from shardutil import make_shards

pytestmark = pytest.mark.slow
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class HoldingS3:
    """moto's S3 server on 127.0.0.1 that can hold uploads whose path contains `hold` until `release`."""

    def __init__(self):
        self.hold, self.held, self.release = None, threading.Event(), threading.Event()
        moto = DomainDispatcherApplication(create_backend_app)

        def app(environ, start_response):
            if self.hold and environ["REQUEST_METHOD"] == "PUT" and self.hold in environ["PATH_INFO"]:
                self.held.set()
                self.release.wait(600)  # the writer is killed meanwhile; the object never lands
                start_response("503 Service Unavailable", [("Content-Length", "0")])
                return [b""]
            return moto(environ, start_response)

        self.server = make_server("127.0.0.1", free_port(), app, True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.thread.join()


@pytest.fixture
def s3(monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    server = HoldingS3()
    try:
        empty_moto(server.url)
        boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket="runs")
        yield server
    finally:
        server.stop()


def pretrain_cmd(shards, endpoint, scratch, *sets):
    return [BIN / "deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), REPO / "launch/pretrain.py",
            "--cpu", "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards, "--output", "s3://runs/run",
            "--max-steps", "6", "--set", "deepspeed.micro_batch_size=4", "--set", "logging.every_steps=1",
            "--set", "checkpoint.every_steps=2", "--set", "checkpoint.keep_last=2", "--set", f"scratch_dir={scratch}",
            "--set", f"data.s3_endpoint_url={endpoint}", "--set", "logging.image_grid_every=3",
            "--set", "logging.tensorboard=false", *(x for s in sets for x in ("--set", s))]


def objects(client) -> dict[str, bytes]:
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="runs", Prefix="run/").get("Contents", [])]
    return {k.removeprefix("run/"): client.get_object(Bucket="runs", Key=k)["Body"].read() for k in keys}


def test_run_directory_on_s3_survives_a_kill_mid_upload_and_feeds_fine_tuning(tmp_path, s3, monkeypatch):
    client = boto3.client("s3", endpoint_url=s3.url)
    shards = make_shards(tmp_path / "shards", [24, 24])
    env = {**os.environ, **CREDENTIALS}

    run(pretrain_cmd(shards, s3.url, tmp_path / "node-a", "schedule.stop_at_step=2"), cwd=tmp_path, env=env)
    stored = objects(client)
    assert stored["checkpoints/latest"] == b"step00000002"
    assert {"config.yaml", "metrics.jsonl", "checkpoints/step00000002/state.json"} <= set(stored)
    assert not (tmp_path / "s3:").exists()  # not a local folder named after the URL

    s3.hold = "checkpoints/step00000004/optimizer.safetensors"
    proc = subprocess.Popen([str(c) for c in pretrain_cmd(shards, s3.url, tmp_path / "node-b")], cwd=tmp_path,
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert s3.held.wait(600), "the step-4 checkpoint upload never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    s3.hold = None
    s3.release.set()
    stored = objects(client)
    assert stored["checkpoints/latest"] == b"step00000002"  # the half checkpoint is never named
    assert "checkpoints/step00000004/model.safetensors" in stored
    assert "checkpoints/step00000004/state.json" not in stored

    run(pretrain_cmd(shards, s3.url, tmp_path / "node-c"), cwd=tmp_path, env=env)
    stored = objects(client)
    records = [json.loads(x) for x in stored["metrics.jsonl"].decode().splitlines()]
    resume = [r for r in records if r.get("event") == "resume"]
    assert [(r["step"], r["checkpoint"]) for r in resume] == [(2, "s3://runs/run/checkpoints/step00000002")]
    # the killed launch's lines were never uploaded (its checkpoint did not complete): each step once
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["event"] == "end" and records[-1]["model"] == "s3://runs/run/model.safetensors"
    tags = {k.split("/")[1] for k in stored if k.startswith("checkpoints/step")}
    assert tags == {"step00000004", "step00000006"}  # keep_last=2; the step-2 one pruned
    assert all(f"checkpoints/{t}/{f}" in stored for t in tags for f in ("model.safetensors", "state.json"))
    assert "images/step00000003.png" in stored and "images/step00000006.png" in stored

    # fine-tuning reads the export, and the run's latest checkpoint, straight from S3
    from usfmae.finetune.encoder import build_vit_classifier

    monkeypatch.setenv(ENDPOINT_ENV, s3.url)
    _, last, _ = read_run_checkpoint(download(client, tmp_path / "step6", "checkpoints/step00000006"))
    for ref in ("s3://runs/run/model.safetensors", "s3://runs/run", "s3://runs/run/checkpoints"):
        vit, report = build_vit_classifier(ref, num_classes=2)
        assert vit.patch_embed.proj.weight.shape[-1] == 8 and report.loaded > 0  # the tiny preset, from S3
        assert torch.equal(vit.blocks[0].attn.qkv.weight, last["blocks.0.attn.qkv.weight"])


def download(client, local, prefix):
    local.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
        client.download_file("runs", f"run/{prefix}/{name}", str(local / name))
    return local
