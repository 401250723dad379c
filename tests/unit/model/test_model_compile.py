"""The model's hot path: no host-device synchronisation in the forward, the backward or the masking, and a
training forward + backward that compiles to one graph (torch.compile(fullgraph=True)) on CPU.

CUDA's sync debug mode cannot run here (no GPU), so two CPU proofs stand in for it: a TorchFunctionMode
that records every call which makes the host wait for the device (`.item()`, `bool()`/`int()` of a tensor,
data-dependent shapes, host-to-device constants), and Dynamo, which cannot put any of them in a graph.
"""

import pytest
import torch

from usfmae.model import create_model, get_masking

from syncutil import SyncRecorder


def tiny(**kw):
    torch.manual_seed(0)
    return create_model("mae_vit_tiny_patch8", **kw).train()


FEATURES = dict(feature_mask_depths=(1, 3), feature_mask_rate=0.3)
# name -> (model overrides, masking strategy of a mask passed in, or None: the model masks at random)
CASES = {
    "random masking inside": ({}, None),
    "random mask passed in": ({}, "random"),
    "multi-scale mask passed in": ({}, "multiscale"),
    "feature masking, multi-scale mask": (FEATURES, "multiscale"),
    "feature masking, random inside": (FEATURES, None),
    "activation checkpointing": ({"checkpointing": True}, "random"),
}


def case_inputs(name):
    overrides, strategy = CASES[name]
    overrides = dict(overrides)
    checkpointing = overrides.pop("checkpointing", False)
    model = tiny(**overrides)
    model.set_grad_checkpointing(checkpointing)
    torch.manual_seed(1)
    imgs = torch.randn(4, 3, 64, 64)
    mask = None if strategy is None else get_masking(strategy)(4, model.num_patches, model.mask_ratio)
    return model, imgs, mask


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_the_recorder_sees_host_syncs():
    x = torch.ones(3)
    with SyncRecorder() as rec:
        x.sum().item(), bool(x.all()), int(x.sum()), x.nonzero(), torch.tensor([1.0]), x.to("cpu")
    assert rec.calls == ["item", "__bool__", "__int__", "nonzero", "tensor", "to"]


@pytest.mark.parametrize("name", list(CASES))
def test_training_step_and_masking_make_no_host_sync(name):
    model, imgs, _ = case_inputs(name)
    strategy = CASES[name][1]
    with SyncRecorder() as rec:
        mask = None if strategy is None else get_masking(strategy)(4, model.num_patches, model.mask_ratio)
        loss, pred, mask = model(imgs, mask=mask)
        loss.backward()
    assert rec.calls == []
    assert mask.sum(1).tolist() == [16] * 4


def test_multiscale_sampler_makes_no_host_sync():
    with SyncRecorder() as rec:
        get_masking("multiscale")(64, 196, 0.25, scales=(1, 2, 4), probs=(0.2, 0.3, 0.5))
    assert rec.calls == []


@pytest.mark.parametrize("name", list(CASES))
def test_dynamo_finds_no_graph_break(name):
    model, imgs, mask = case_inputs(name)
    explained = torch._dynamo.explain(model)(imgs, mask=mask)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("name", ["random masking inside", "multi-scale mask passed in",
                                  "feature masking, random inside", "activation checkpointing"])
def test_fullgraph_compiled_training_step_matches_eager(name):
    """Forward and backward through torch.compile(fullgraph=True) (aot_eager: Dynamo + AOTAutograd without
    code generation) give eager's loss and gradients; in-graph random masks follow the same seed."""
    model, imgs, mask = case_inputs(name)
    results = []
    for run in (model, torch.compile(model, fullgraph=True, backend="aot_eager")):
        model.zero_grad()
        torch.manual_seed(2)
        loss, pred, out_mask = run(imgs, mask=mask)
        loss.backward()
        results.append((loss.detach(), out_mask, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_e, mask_e, grads_e), (loss_c, mask_c, grads_c) = results
    assert torch.equal(mask_e, mask_c)
    assert torch.allclose(loss_e, loss_c, atol=1e-6)
    assert len(grads_e) == len(grads_c) > 0
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_e, grads_c))


def test_compiled_model_still_refuses_a_mask_with_the_wrong_count():
    model, imgs, mask = case_inputs("random mask passed in")
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(imgs, mask=mask)
    bad = mask.clone()
    bad[0] = True
    with pytest.raises(RuntimeError, match="must mask 16 of 64 patches"):
        compiled(imgs, mask=bad)


@pytest.mark.slow
def test_inductor_compiles_the_training_step_fullgraph(tmp_path, monkeypatch, one_thread):
    """The real backend (C++ code generation on CPU, ~2 minutes here): feature masking inside the graph,
    a multi-scale mask passed in; the compiled step trains."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # a cold cache: a real compile
    model, imgs, mask = case_inputs("feature masking, multi-scale mask")
    compiled = torch.compile(model, fullgraph=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss, pred, out = compiled(imgs, mask=mask)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert torch.equal(out, mask) and pred.shape == (4, 64, 192)
    assert losses[-1] < losses[0]
