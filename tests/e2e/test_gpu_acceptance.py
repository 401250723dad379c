"""benchmarks/gpu_acceptance.py: without a GPU it exits 2 saying so; its CPU dry mode runs the whole script (real
Trainer, loader, checkpoint, compile) on the tiny preset and prints one JSON document with every key."""

import json
import subprocess
import sys

import torch

import pytest

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_acceptance.py"
VARIANT_KEYS = {"micro_batch", "activation_checkpointing", "compile", "warmup_s", "step_ms", "images_per_s", "mfu",
                "peak_memory_gib"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_it_exits_2_and_says_why():
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "measures a CUDA GPU and this machine has none torch can use" in proc.stderr and "--cpu-dry-run" in proc.stderr


def test_cpu_dry_run_prints_every_key(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--cpu-dry-run", "--work", str(tmp_path)], capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # stdout is the JSON alone
    assert {"machine", "device", "precision", "model", "mask_ratio", "forward_gflops_per_image", "variants",
            "host_syncs_per_step", "checkpoint_stall_s", "loader", "elapsed_s"} <= set(report)
    assert (report["device"], report["precision"], report["mask_ratio"]) == ("cpu", "fp32", 0.25)
    grid = {(v["micro_batch"], v["activation_checkpointing"], v["compile"]) for v in report["variants"]}
    assert grid == {(2, False, False), (2, True, False), (4, False, False), (4, True, False), (4, False, True)}
    for v in report["variants"]:
        assert set(v) == VARIANT_KEYS and v["images_per_s"] > 0 and v["mfu"] is None  # no GPU: no MFU, no memory
    loader = report["loader"]
    assert loader["images_per_s"] > 0 and loader["workers"] == 1 and isinstance(loader["keeps_up"], bool)
    assert loader["gpu_consumes_images_per_s"] == max(v["images_per_s"] for v in report["variants"])
    assert report["checkpoint_stall_s"] > 0 and report["host_syncs_per_step"] is None  # sync debug mode: CUDA only
    assert (tmp_path / "run_4_full_eager" / "checkpoints").is_dir()
