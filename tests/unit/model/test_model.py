"""MAE model: reference key names, loss, masking, patchify."""

import pytest
import torch

from usfmae.model import create_model, num_masked, random_mask
from usfmae.model.timm_vit import timm_vit_like
from usfmae.checkpoint import mae_to_timm

# The reference MAE's (facebookresearch/mae mae_vit_base_patch16_dec512d8b) parameter names.
BLOCK_KEYS = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
              "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
              "mlp.fc2.weight", "mlp.fc2.bias"]


def reference_keys(depth=12, decoder_depth=8):
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    keys += [f"blocks.{i}.{k}" for i in range(depth) for k in BLOCK_KEYS]
    keys += ["norm.weight", "norm.bias", "mask_token", "decoder_pos_embed",
             "decoder_embed.weight", "decoder_embed.bias"]
    keys += [f"decoder_blocks.{i}.{k}" for i in range(decoder_depth) for k in BLOCK_KEYS]
    keys += ["decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"]
    return keys


@pytest.fixture(scope="module")
def base():
    return create_model("mae_vit_base_patch16")


def test_state_dict_keys_and_shapes_match_reference(base):
    sd = base.state_dict()
    assert sorted(sd) == sorted(reference_keys())
    assert sd["pos_embed"].shape == (1, 197, 768)
    assert sd["decoder_pos_embed"].shape == (1, 197, 512)
    assert sd["decoder_pred.weight"].shape == (16 * 16 * 3, 512)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * 768, 768)
    assert sum(p.numel() for p in base.parameters()) == 111_907_840  # MAE ViT-B dec512d8b


def test_reference_format_state_dict_loads_strictly(base):
    # A state dict in the released-weights format (plain tensors under 'model') loads with strict=True.
    ref = {k: torch.randn_like(v) for k, v in base.state_dict().items()}
    fresh = create_model("mae_vit_base_patch16")
    fresh.load_state_dict(ref, strict=True)
    assert torch.equal(fresh.blocks[3].mlp.fc1.weight, ref["blocks.3.mlp.fc1.weight"])


def tiny(**kw):
    torch.manual_seed(0)
    return create_model("mae_vit_tiny_patch8", **kw)


def test_loss_is_masked_mse_by_hand():
    model = tiny()
    imgs = torch.randn(3, 3, 64, 64)
    loss, pred, mask = model(imgs)
    target = model.patchify(imgs)
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    manual = per_patch[mask].mean()
    assert torch.allclose(loss, manual, atol=1e-6)
    assert mask.dtype == torch.bool and mask.shape == (3, 64)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_exact_masked_count_per_sample(ratio):
    mask = random_mask(7, 196, ratio)
    assert (mask.sum(1) == round(196 * ratio)).all()
    model = tiny()
    if ratio > 0:
        _, _, m = model(torch.randn(4, 3, 64, 64), mask_ratio=ratio)
        assert (m.sum(1) == num_masked(64, ratio)).all()


def test_prediction_on_visible_patches_does_not_change_loss():
    model = tiny()
    imgs = torch.randn(2, 3, 64, 64)
    _, pred, mask = model(imgs)
    altered = pred.clone()
    altered[~mask] += 100.0
    assert torch.allclose(model.forward_loss(imgs, pred, mask), model.forward_loss(imgs, altered, mask))
    altered_masked = pred.clone()
    altered_masked[mask] += 1.0
    assert not torch.allclose(model.forward_loss(imgs, pred, mask), model.forward_loss(imgs, altered_masked, mask))


def test_given_mask_replaces_random_masking():
    model = tiny()  # mask ratio 0.25: 16 of 64 patches
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, :16] = True
    _, _, out = model(torch.randn(2, 3, 64, 64), mask=mask)
    assert torch.equal(out, mask)
    # a mask made at another ratio says so
    other = torch.zeros(2, 64, dtype=torch.bool)
    other[:, 5:15] = True
    _, pred, out = model(torch.randn(2, 3, 64, 64), mask_ratio=10 / 64, mask=other)
    assert torch.equal(out, other) and pred.shape == (2, 64, 192)
    bad = mask.clone()
    bad[1, 20] = True
    with pytest.raises(RuntimeError, match="every row of the mask must mask 16 of 64 patches"):
        model(torch.randn(2, 3, 64, 64), mask=bad)
    with pytest.raises(RuntimeError, match="must mask 16 of 64"):
        model(torch.randn(2, 3, 64, 64), mask=other)
    with pytest.raises(ValueError, match=r"mask must have shape \[2, 64\]"):
        model(torch.randn(2, 3, 64, 64), mask=mask[:, :32])


@pytest.mark.parametrize("chans", [1, 3])
def test_patchify_roundtrip(chans):
    model = tiny(in_chans=chans)
    imgs = torch.randn(2, chans, 64, 64)
    patches = model.patchify(imgs)
    assert patches.shape == (2, 64, 8 * 8 * chans)
    assert torch.equal(model.unpatchify(patches), imgs)
    # first patch holds the top-left 8x8 block
    assert torch.equal(patches[0, 0].reshape(8, 8, chans).permute(2, 0, 1), imgs[0, :, :8, :8])
    loss, pred, _ = model(imgs)
    assert pred.shape == (2, 64, 8 * 8 * chans) and torch.isfinite(loss)


def test_activation_checkpointing_gives_same_gradients():
    imgs = torch.randn(2, 3, 64, 64)
    mask = random_mask(2, 64, 0.25, generator=torch.Generator().manual_seed(1))
    grads = []
    for ckpt in (False, True):
        model = tiny()
        model.set_grad_checkpointing(ckpt)
        loss, _, _ = model(imgs, mask=mask)
        loss.backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_encoder_matches_timm_vit_features():
    model = tiny().eval()
    vit = timm_vit_like(model).eval()
    vit.load_state_dict(mae_to_timm(model.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(model.forward_features(x), vit.forward_features(x), atol=1e-5)
