"""End to end with the real launchers: Ray job -> deepspeed (2 CPU ranks) -> fine-tune."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from usfmae.model import create_model
from usfmae.ports import free_port
from usfmae.testing.synthetic import write_corpus, write_labeled

from helpers import BIN, REPO, run

pytestmark = pytest.mark.slow


def test_pipeline_end_to_end(tmp_path, ray_cluster):
    corpus, shards, pre, ft = tmp_path / "corpus", tmp_path / "shards", tmp_path / "pre", tmp_path / "ft"
    write_corpus(corpus, 64, seed=3, size=128)
    (corpus / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    run([BIN / "ray", "job", "submit", f"--address={ray_cluster}", "--",
         BIN / "python", REPO / "preprocessing/build_shards.py", "--input", corpus, "--output", shards,
         "--shard-size", "20"])
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["total_samples"] == 64
    assert len(manifest["shards"]) == 4  # 65 inputs in shards of 20; the broken one is rejected
    assert sum(s["samples"] for s in manifest["shards"]) == 64
    report = json.loads((shards / "report.json").read_text())
    assert report["inputs_seen"] == 65 and [r["input"] for r in report["rejected"]] == ["broken.png"]

    port = free_port()
    run([BIN / "deepspeed", "--num_gpus", "2", "--master_port", str(port), REPO / "launch/pretrain.py", "--cpu",
         "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards, "--output", pre,
         "--max-steps", "4", "--set", "logging.every_steps=1", "--set", "logging.image_grid_every=2",
         "--set", "checkpoint.every_steps=2"], cwd=REPO)
    records = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(k in steps[0] for k in ("lr", "images_per_s", "grad_norm", "samples_seen"))
    assert steps[-1]["samples_seen"] == 4 * 16 * 2
    # DeepSpeed's CPU all-reduce buffers (67 MB each, RAM-backed) are not left behind in /dev/shm
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert (pre / "checkpoints/latest").read_text() == "step00000004"
    assert (pre / "config.yaml").is_file() and (pre / "images/step00000002.png").is_file()
    state = load_file(pre / "model.safetensors")
    model = create_model("mae_vit_tiny_patch8")
    model.load_state_dict(state, strict=True)
    assert all(v.dtype == torch.float32 for v in state.values())

    # export straight from the DeepSpeed ZeRO checkpoints of the run, without DeepSpeed at load time
    run([BIN / "python", "-m", "usfmae.commands.export", "--checkpoint", pre, "--format", "timm", "--out", tmp_path / "enc.pth"])
    enc = torch.load(tmp_path / "enc.pth", weights_only=True)
    assert torch.equal(enc["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert not any(k.startswith("decoder") for k in enc)

    labeled = write_labeled(tmp_path / "labeled", n_per_class=10, seed=4, size=96)
    proc = run([BIN / "python", REPO / "launch/finetune.py", "--checkpoint", pre / "model.safetensors",
                "--data", labeled, "--output", ft, "--set", "epochs=2", "--set", "batch_size=8",
                "--set", "num_workers=0"])
    assert "F1" in proc.stdout
    metrics = json.loads((ft / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"benign", "malignant"}
    for avg in ("macro", "micro"):
        assert 0.0 <= metrics[avg]["f1"] <= 1.0
    assert sum(map(sum, metrics["confusion_matrix"])) == 4  # stratified 20% of 20 images
