"""Checkpoint conversion: reference-format state dicts, init_from, pos-embed interpolation, timm export."""

import timm
import torch

from usfmae.checkpoint import CheckpointError, ENCODER_PREFIXES, load_into, load_state_dict, save_safetensors
from usfmae.export import export
from usfmae.model import create_model

import pytest


def tiny(**kw):
    torch.manual_seed(0)
    return create_model("mae_vit_tiny_patch8", **kw)


def test_released_and_imagenet_formats_load(tmp_path):
    src = tiny()
    plain, wrapped = tmp_path / "usfmae_release.pt", tmp_path / "mae_imagenet.pth"
    torch.save(src.state_dict(), plain)  # released USF-MAE weights: a plain state dict
    torch.save({"model": src.state_dict(), "epoch": 799}, wrapped)  # MAE ImageNet: under 'model'
    for path in (plain, wrapped):
        dst = create_model("mae_vit_tiny_patch8")
        report = load_into(dst, path, strict=True, verbose=False)
        assert report.missing == [] and report.unexpected == []
        assert torch.equal(dst.blocks[1].attn.qkv.weight, src.blocks[1].attn.qkv.weight)


def test_state_dicts_of_wrapped_models_load(tmp_path):
    """DDP / DeepSpeed ('module.') and torch.compile ('_orig_mod.') prefixes are taken off."""
    src = tiny()
    ddp_compiled = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
    torch.save(ddp_compiled, tmp_path / "wrapped.pt")
    save_safetensors({f"_orig_mod.{k}": v for k, v in src.state_dict().items()}, tmp_path / "compiled.safetensors")
    for name in ("wrapped.pt", "compiled.safetensors"):
        dst = create_model("mae_vit_tiny_patch8")
        assert load_into(dst, tmp_path / name, strict=True, verbose=False).missing == []
        assert torch.equal(dst.decoder_pred.weight, src.decoder_pred.weight)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": tiny().state_dict(), "args": object()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_state_dict(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.pt")


def test_position_embeddings_interpolated_when_grid_differs(tmp_path):
    src = tiny(img_size=32)  # 4x4 grid
    path = save_safetensors(src.state_dict(), tmp_path / "small.safetensors")
    dst = tiny()  # 8x8 grid
    report = load_into(dst, path, verbose=False)
    assert any(a.startswith("pos_embed [1, 17, 96]->[1, 65, 96]") for a in report.adapted)
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(dst.pos_embed[:, 0], src.pos_embed[:, 0])  # cls position kept


def test_report_lists_missing_and_unexpected(tmp_path):
    state = tiny().state_dict()
    state.pop("mask_token")
    state["head.weight"] = torch.zeros(2, 96)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    report = load_into(tiny(), path, verbose=False)
    assert report.missing == ["mask_token"] and report.unexpected == ["head.weight"]
    assert "1 missing, 1 unexpected" in str(report)
    with pytest.raises(CheckpointError):
        load_into(tiny(), path, strict=True, verbose=False)


def test_encoder_prefix_selection(tmp_path):
    path = save_safetensors(tiny().state_dict(), tmp_path / "m.safetensors")
    vit = timm.models.vision_transformer.VisionTransformer(img_size=64, patch_size=8, embed_dim=96, depth=4,
                                                           num_heads=3, num_classes=2)
    report = load_into(vit, path, prefixes=ENCODER_PREFIXES, verbose=False)
    assert sorted(report.missing) == ["head.bias", "head.weight"] and report.unexpected == []


def test_timm_export_of_vit_b16_loads_strictly_with_same_features(tmp_path):
    torch.manual_seed(0)
    mae = create_model("mae_vit_base_patch16").eval()
    src = save_safetensors(mae.state_dict(), tmp_path / "mae.safetensors",
                           {"preset": "mae_vit_base_patch16", "model_overrides": {}})
    out = export(src, "timm", tmp_path / "vitb16_timm.pth")
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()
    vit.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(vit.forward_features(x), mae.forward_features(x), atol=1e-4)
        assert torch.allclose(vit(x), mae.forward_features(x)[:, 0], atol=1e-4)  # cls-token pooled output


def test_mae_export_round_trip(tmp_path):
    mae = tiny()
    src = save_safetensors(mae.state_dict(), tmp_path / "in.safetensors",
                           {"preset": "mae_vit_tiny_patch8", "model_overrides": {}})
    out = export(src, "mae", tmp_path / "out.safetensors")
    again = create_model("mae_vit_tiny_patch8")
    again.load_state_dict(load_state_dict(out), strict=True)
    assert torch.equal(again.decoder_pred.weight, mae.decoder_pred.weight)


def test_training_checkpoints_are_written_atomically_and_read_by_every_loader(tmp_path):
    from usfmae.checkpoint import read_run_checkpoint, run_checkpoint_dir, write_run_checkpoint

    mae = tiny()
    weights = {k: v.float() for k, v in mae.state_dict().items()}
    moments = {"exp_avg": {"cls_token": torch.ones(1, 1, 96)}, "exp_avg_sq": {"cls_token": torch.full((1, 1, 96), 2.0)}}
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "step00000004.tmp").mkdir()  # an interrupted save: never pointed at
    write_run_checkpoint(ckpts, "step00000005", weights, moments, {"step": 5}, {"preset": "mae_vit_tiny_patch8"})
    assert (ckpts / "latest").read_text() == "step00000005" and run_checkpoint_dir(ckpts) == ckpts / "step00000005"
    state, w, m = read_run_checkpoint(ckpts / "step00000005")
    assert state == {"step": 5} and torch.equal(m["exp_avg_sq"]["cls_token"], moments["exp_avg_sq"]["cls_token"])
    for source in (ckpts, ckpts / "step00000005"):  # init_from / fine-tuning / export read them as weights
        dst = create_model("mae_vit_tiny_patch8")
        assert load_into(dst, source, strict=True, verbose=False).missing == []
        assert torch.equal(dst.blocks[0].attn.qkv.weight, mae.blocks[0].attn.qkv.weight)
    out = export(tmp_path / "run", "mae", tmp_path / "out.safetensors", preset="mae_vit_tiny_patch8")
    assert torch.equal(load_state_dict(out)["decoder_pred.weight"], mae.decoder_pred.weight)
    (ckpts / "step00000005" / "optimizer.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="step00000005"):
        read_run_checkpoint(ckpts / "step00000005")


def test_export_meta_is_written_and_read_back(tmp_path):
    from usfmae.checkpoint import ExportMeta

    meta = ExportMeta("mae_vit_tiny_patch8", {"img_size": 64, "norm_pix_loss": True}, step=7)
    path = save_safetensors({"w": torch.zeros(2)}, tmp_path / "m.safetensors", meta.metadata())
    assert ExportMeta.read(path) == meta
    assert ExportMeta.read(save_safetensors({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")) is None
    torch.save({"w": torch.zeros(2)}, tmp_path / "m.pt")
    assert ExportMeta.read(tmp_path / "m.pt") is None and ExportMeta.read(tmp_path / "absent.safetensors") is None
