"""torch.compile in the pretraining engine: gradient hooks (what ZeRO-2 reduces buckets from) fire block by
block under the default compile scope and only at the end of a whole-model graph; the compiled model trains on
2 CPU ranks at ZeRO 2 and 1, checkpoints do not depend on it (a run resumes with compile switched off and on
again, across ZeRO stages 2 -> 0 -> 1 and compile scopes), and exports load without its wrapper.

The aot_eager backend throughout: Dynamo's capture and AOTAutograd's joint graph, which decide when gradients
appear, without Inductor's code generation (minutes on 2 cores; not what is tested here)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from usfmae.model import create_model, get_masking
from usfmae.train.compiling import compile_model

from helpers import BIN, REPO, checkpoint_digest, run
from shardutil import make_shards


class MatmulCount(TorchDispatchMode):
    """Counts the matmuls run so far: a clock of the backward's progress that does not depend on speed."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("scope", ["blocks", "model"])
def test_gradient_hooks_fire_during_the_backward_only_with_blocks_compiled(scope):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model("mae_vit_tiny_patch8").train()
    net = compile_model(model, scope, "aot_eager")
    clock, fired_at = MatmulCount(), []
    for p in model.parameters():  # as DeepSpeed's ZeRO-2 registers its per-parameter hooks
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda p: fired_at.append(clock.n))
    imgs, mask = torch.randn(2, 3, 64, 64), get_masking("random")(2, model.num_patches, 0.25)
    net(imgs, mask=mask)[0].backward()  # compiles
    fired_at.clear()
    loss = net(imgs, mask=mask)[0]
    with clock:
        loss.backward()
    torch._dynamo.reset()
    assert len(fired_at) == sum(p.requires_grad for p in model.parameters())
    if scope == "model":  # one graph: every gradient appears after the last matmul of the backward
        assert set(fired_at) == {clock.n}
    else:  # block by block: most hooks fire while matmuls of earlier blocks are still to run
        assert len(set(fired_at)) >= len(model.blocks) + len(model.decoder_blocks)
        assert min(fired_at) < clock.n / 4 and sorted(fired_at)[len(fired_at) // 2] < clock.n
    assert list(model.state_dict()) == list(create_model("mae_vit_tiny_patch8").state_dict())  # names kept


@pytest.mark.slow
def test_compiled_pretraining_resumes_with_compile_off_and_on(tmp_path):
    shards = make_shards(tmp_path / "b", [40])
    out = tmp_path / "run"

    def pretrain(ranks: int, compile_on: bool, *sets):
        run([BIN / "usfmae", "pretrain", "--nproc", str(ranks), "--cpu", "--config", REPO / "configs/pretrain_tiny.yaml",
             "--shards", shards, "--output", out, "--max-steps", "4", "--set", "logging.every_steps=1",
             "--set", f"deepspeed.compile={str(compile_on).lower()}", "--set", "deepspeed.compile_backend=aot_eager",
             "--set", "checkpoint.keep_last=5", "--set", "deepspeed.micro_batch_size=4",
             *[x for s in sets for x in ("--set", s)]])

    pretrain(2, True, "schedule.stop_at_step=2", "deepspeed.zero_stage=2")  # blocks compiled, ZeRO-2 buckets
    pretrain(1, False, "schedule.stop_at_step=3")  # one fp32 rank: stage 0, plain AdamW, no partitions
    pretrain(2, True, "deepspeed.zero_stage=1", "deepspeed.compile_scope=model")
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
