"""torch.compile in the pretraining engine: the compiled model trains, checkpoints do not depend on it (a run
resumes with compile switched off and on again, here also across ZeRO stages 2 -> 0 -> 1), and exports load
without its wrapper."""

import json
import math

import pytest
from safetensors.torch import load_file

from usfmae.model import create_model
from test_elastic import checkpoint_digest

from helpers import BIN, REPO, run
from shardutil import make_shards


@pytest.mark.slow
def test_compiled_pretraining_resumes_with_compile_off_and_on(tmp_path):
    shards = make_shards(tmp_path / "b", [40])
    out = tmp_path / "run"

    def pretrain(compile_on: bool, *sets):
        # aot_eager: Dynamo graph capture + AOTAutograd forward/backward, without Inductor's minutes of C++ codegen
        run([BIN / "usfmae", "pretrain", "--cpu", "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards,
             "--output", out, "--max-steps", "4", "--set", "logging.every_steps=1",
             "--set", f"deepspeed.compile={str(compile_on).lower()}", "--set", "deepspeed.compile_backend=aot_eager", "--set", "checkpoint.keep_last=5",
             *[x for s in sets for x in ("--set", s)]])

    pretrain(True, "schedule.stop_at_step=2", "deepspeed.zero_stage=2")
    pretrain(False, "schedule.stop_at_step=3", "deepspeed.zero_stage=0")  # plain AdamW, no partitions
    pretrain(True, "deepspeed.zero_stage=1")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    resumes = [r for r in records if r.get("event") == "resume"]
    assert [r["step"] for r in resumes] == [2, 3]
    for r in resumes:  # what each engine holds after loading is what the other stage saved
        assert r["state_digest"] == checkpoint_digest(out / f"checkpoints/step{r['step']:08d}")
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert sorted(losses) == [1, 2, 3, 4] and all(math.isfinite(x) for x in losses.values())
    state = load_file(out / "model.safetensors")
    assert not any(k.startswith("_orig_mod.") for k in state)
    create_model("mae_vit_tiny_patch8").load_state_dict(state, strict=True)
