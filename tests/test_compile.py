"""torch.compile in the pretraining engine: the compiled model trains, and exports load without its wrapper."""

import json
import math

import pytest
from safetensors.torch import load_file

from usfmae.model import create_model

from conftest import BIN, REPO, run
from shardutil import make_shards


@pytest.mark.slow
def test_compiled_pretraining_trains_and_exports_plain_weights(tmp_path):
    shards = make_shards(tmp_path / "b", [40])
    # aot_eager: Dynamo graph capture + AOTAutograd forward/backward, without Inductor's minutes of C++ codegen
    run([BIN / "usfmae", "pretrain", "--cpu", "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards,
         "--output", tmp_path / "run", "--max-steps", "3", "--set", "logging.every_steps=1",
         "--set", "deepspeed.compile=true", "--set", "deepspeed.compile_backend=aot_eager"])
    steps = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in steps if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    state = load_file(tmp_path / "run/model.safetensors")
    assert not any(k.startswith("_orig_mod.") for k in state)
    create_model("mae_vit_tiny_patch8").load_state_dict(state, strict=True)
