"""Fair comparisons: the small CNN baseline, fine-tuning cells chosen on validation, probe sweeps."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from usfmae.finetune.classification.config import FinetuneConfig
from usfmae.finetune.classification.models import build_classifier
from usfmae.eval.probe import extract_features
from usfmae.finetune.classification.small_cnn import SmallCNN
from usfmae.finetune.classification.sweep import choose, finetune_cell, mean_std, probe_sweep

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["benign", "malignant"]


class Shifted(Dataset):
    """Noise images whose class shifts the mean brightness: separable by a model that learns anything."""

    def __init__(self, n: int, seed: int, size: int = 32, shift: float = 1.0):
        g = torch.Generator().manual_seed(seed)
        self.targets = [i % 2 for i in range(n)]
        self.x = torch.randn(n, 3, size, size, generator=g) + shift * (2 * torch.tensor(self.targets) - 1).view(-1, 1, 1, 1)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


def _cfg(**kw) -> FinetuneConfig:
    return FinetuneConfig(**{"model": "small_cnn", "image_size": 32, "epochs": 3, "batch_size": 16, "lr": 3e-3,
                             "warmup_epochs": 0, "layer_decay": None, "num_workers": 0, "select_on": "macro_f1",
                             "positive_class": "malignant", **kw})


def test_small_cnn_shapes_features_and_builder():
    model = SmallCNN(num_classes=2).eval()
    x = torch.randn(3, 3, 128, 128)
    assert model.forward_features(x).shape == (3, 128, 8, 8)
    assert model(x).shape == (3, 2)
    loader = DataLoader(Shifted(5, seed=0, size=64), batch_size=2)
    feats, y = extract_features(model, loader)  # the probe's path: forward_head(..., pre_logits=True)
    assert feats.shape == (5, 128) and y.tolist() == [0, 1, 0, 1, 0]

    built, size, summary = build_classifier(_cfg(image_size=96), 3)
    assert isinstance(built, SmallCNN) and size == 96 and built.head.out_features == 3 and "scratch" in summary
    with pytest.raises(ValueError, match="small_cnn trains from scratch"):
        build_classifier(_cfg(checkpoint="encoder.safetensors"), 2)


def test_finetune_cell_learns_scores_test_at_the_best_validation_epoch_and_caches(tmp_path):
    builds = []

    def build():
        builds.append(1)
        torch.manual_seed(0)
        return SmallCNN(2)

    train, val, test = Shifted(64, seed=1), Shifted(32, seed=2), Shifted(32, seed=3)
    cell = finetune_cell(build, train, val, test, CLASSES, _cfg(), tmp_path / "cell", seed=0)
    assert cell["test"]["accuracy"] >= 0.9 and cell["val"]["accuracy"] >= 0.9
    scores, positive = cell["test"], _cfg().positive_class  # Table 2's figures: the positive class's, and per class
    assert [scores[k] for k in ("precision", "recall", "f1")] == list(scores["per_class"][positive].values())
    history = json.loads((tmp_path / "cell" / "history.json").read_text())
    assert cell["val_score"] == max(h["val_macro_f1"] for h in history)
    assert history[cell["best_epoch"] - 1]["val_macro_f1"] == cell["val_score"]
    assert not (tmp_path / "cell" / "best_model.pt").exists()  # weights dropped once the test is scored

    again = finetune_cell(build, train, val, test, CLASSES, _cfg(), tmp_path / "cell", seed=0)
    assert again == cell and len(builds) == 1  # cached: nothing retrained
    finetune_cell(build, train, val, test, CLASSES, _cfg(lr=1e-3), tmp_path / "cell", seed=0)
    assert len(builds) == 2  # another recipe in the same folder is trained, not read from the cache


def test_choose_looks_at_validation_only_and_keeps_the_first_of_ties():
    cells = {"3e-4": {"val_score": 0.70, "test": {"accuracy": 0.95}},
             "1e-3": {"val_score": 0.80, "test": {"accuracy": 0.60}},
             "3e-3": {"val_score": 0.80, "test": {"accuracy": 0.99}}}
    assert choose(cells) == "1e-3"
    with pytest.raises(ValueError, match="no cells"):
        choose({})


def test_probe_sweep_chooses_C_without_the_test_labels():
    rng = np.random.default_rng(0)

    def split(n, noise):
        y = np.arange(n) % 2
        x = rng.normal(size=(n, 8)) * noise
        x[:, 0] += 2 * y - 1  # one informative direction
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    train, val, test = split(40, 1.0), split(40, 1.0), split(60, 0.1)
    result = probe_sweep(train, val, test, CLASSES, "malignant")
    assert set(result["grid"]) == {"0.01", "0.1", "1.0", "10.0"}
    assert result["val_score"] == max(result["grid"].values())
    assert result["test"]["accuracy"] >= 0.95 and result["test"]["auroc"] >= 0.95
    flipped = probe_sweep(train, val, (test[0], 1 - test[1]), CLASSES, "malignant")
    assert (flipped["C"], flipped["grid"]) == (result["C"], result["grid"])  # the choice ignores the test labels
    assert flipped["test"]["accuracy"] <= 0.05


def test_mean_std_over_seeds():
    assert mean_std([0.5, 0.7, None]) == {"mean": 0.6, "std": 0.1414, "n": 2}
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


def test_random_init_keeps_the_checkpoints_architecture_not_its_weights(tmp_path):
    from usfmae.checkpoint import save_safetensors
    from usfmae.model import create_model

    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    overrides = {"img_size": 96, "patch_size": 16}
    mae = create_model("mae_vit_tiny_patch8", **overrides)
    save_safetensors(mae.state_dict(), path, {"format": "usfmae-mae", "preset": "mae_vit_tiny_patch8",
                                              "model_overrides": overrides})
    loaded, size, _ = build_classifier(FinetuneConfig(checkpoint=str(path)), 2)
    control, size_control, summary = build_classifier(FinetuneConfig(checkpoint=str(path), random_init=True), 2)
    assert size == size_control == 96 and control.patch_embed.patch_size == (16, 16)
    assert "random init with the architecture of" in summary
    assert torch.equal(loaded.blocks[0].attn.qkv.weight, mae.blocks[0].attn.qkv.weight)
    assert not torch.equal(control.blocks[0].attn.qkv.weight, mae.blocks[0].attn.qkv.weight)
    assert torch.equal(control.pos_embed, mae.pos_embed)  # the MAE's own init: fixed sin-cos position embeddings
    with pytest.raises(ValueError, match="random_init builds the architecture of `checkpoint`"):
        build_classifier(FinetuneConfig(random_init=True), 2)
    with pytest.raises(ValueError, match="random_init applies to model usfmae"):
        build_classifier(_cfg(random_init=True), 2)
