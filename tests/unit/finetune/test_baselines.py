"""Baselines build offline, forward, and load local weights with the head adapted."""


import pytest
import timm
import torch
from safetensors.torch import save_file

from usfmae.checkpoint import load_state_dict
from usfmae.finetune.classification.baselines import BASELINES, build_baseline, load_baseline_weights

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.mark.parametrize("name, size", [("vgg19", 64), ("resnet50", 64), ("vit_base_patch16_224", 224)])
def test_builds_offline_and_forwards(name, size):
    torch.manual_seed(0)
    model = build_baseline(name, num_classes=3).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, size, size))
    assert logits.shape == (1, 3)
    assert torch.isfinite(logits).all()


def test_resnet50_imagenet_checkpoint_head_reinitialised(tmp_path):
    torch.manual_seed(1)
    imagenet = timm.create_model("resnet50", pretrained=False, num_classes=1000)
    # A training checkpoint as DataParallel saves it: wrapped and 'module.'-prefixed.
    wrapped = {"epoch": 90, "state_dict": {f"module.{k}": v for k, v in imagenet.state_dict().items()}}
    path = tmp_path / "resnet50_imagenet.pth"
    torch.save(wrapped, path)

    torch.manual_seed(2)
    model = build_baseline("resnet50", num_classes=2, weights=path)
    own = model.state_dict()
    assert torch.equal(own["conv1.weight"], imagenet.state_dict()["conv1.weight"])
    assert torch.equal(own["layer4.2.bn3.running_mean"], imagenet.state_dict()["layer4.2.bn3.running_mean"])
    assert own["fc.weight"].shape == (2, 2048)

    report = load_baseline_weights(timm.create_model("resnet50", num_classes=2), "resnet50", path)
    assert sorted(report.reinitialised) == ["fc.bias", "fc.weight"]
    assert report.missing == []  # the head is accounted for as reinitialised
    assert report.unexpected == []


def test_vit_safetensors_same_head_loads_everything(tmp_path):
    torch.manual_seed(3)
    source = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=3)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=3)
    report = load_baseline_weights(model, "vit_base_patch16_224", path)
    assert report.reinitialised == [] and report.missing == [] and report.unexpected == []
    for key in ("pos_embed", "blocks.11.mlp.fc2.weight", "head.weight"):
        assert torch.equal(model.state_dict()[key], source.state_dict()[key])
    # Another input size: timm's filter resamples the 14x14 position grid to 10x10 (+ cls token).
    smaller = build_baseline("vit_base_patch16_224", num_classes=3, weights=path, img_size=160)
    assert smaller.pos_embed.shape == (1, 101, 768)
    assert torch.equal(smaller.state_dict()["blocks.0.attn.qkv.weight"], source.state_dict()["blocks.0.attn.qkv.weight"])


def test_partial_vgg_file_strict_and_lenient(tmp_path):
    source = timm.create_model("vgg19", pretrained=False, num_classes=1000)
    features_only = {k: v for k, v in source.state_dict().items() if k.startswith("features.")}
    path = tmp_path / "vgg_features.pt"
    torch.save(features_only, path)
    with pytest.raises(ValueError, match=r"vgg_features.pt does not fit vgg19 .*pre_logits"):
        build_baseline("vgg19", num_classes=2, weights=path)
    model = timm.create_model("vgg19", pretrained=False, num_classes=2)
    report = load_baseline_weights(model, "vgg19", path, strict_backbone=False)
    assert report.loaded == len(features_only)
    assert "pre_logits.fc1.weight" in report.missing
    assert torch.equal(model.state_dict()["features.0.weight"], source.state_dict()["features.0.weight"])


def test_wrong_architecture_and_bad_files(tmp_path):
    resnet_file = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, resnet_file)
    with pytest.raises(ValueError, match="no tensor matches model vit_base_patch16_224"):
        build_baseline("vit_base_patch16_224", num_classes=2, weights=resnet_file)
    with pytest.raises(FileNotFoundError, match="missing_weights.pth"):
        build_baseline("resnet50", num_classes=2, weights=tmp_path / "missing_weights.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pth"):
        load_state_dict(corrupt)
    not_tensors = tmp_path / "config.pth"
    torch.save({"lr": 0.001}, not_tensors)
    with pytest.raises(ValueError, match="config.pth does not hold a state dict"):
        load_state_dict(not_tensors)


def test_backbone_shape_mismatch_is_an_error(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"conv1.weight": torch.zeros(32, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match=r"conv1.weight has shape \(32, 3, 7, 7\)"):
        build_baseline("resnet50", num_classes=2, weights=path)


def test_rejects_unknown_names_and_downloads():
    assert BASELINES == ("vgg19", "resnet50", "vit_base_patch16_224")
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("resnet18", num_classes=2)
    with pytest.raises(ValueError, match="never download"):
        build_baseline("resnet50", num_classes=2, pretrained=True)
