"""Training pieces: loss on hard and mixed targets, schedule, optimizer groups, early stopping, protocols."""

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from usfmae.config import ConfigError, load_config
from usfmae.finetune.classification.config import FinetuneConfig
from usfmae.data.labelled import LabelledImages
from usfmae.finetune.encoder import build_vit_classifier
from usfmae.finetune.classification.objective import ClassificationLoss, build_mixup, class_weights
from usfmae.finetune.classification.protocol import plan_folds, positive_class
from usfmae.eval.metrics import classification_metrics
from usfmae.finetune.classification.train import build_optimizer, lr_at, selection_score, train_one

pytestmark = pytest.mark.usefixtures("one_thread")


class Tensors(Dataset):
    """Random images with labels, exposing `targets` like the image datasets."""

    def __init__(self, n: int, size: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.targets = [i % 2 for i in range(n)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


def test_class_weights_inverse_frequency():
    assert class_weights([0, 1, 0, 1], 2).tolist() == [1.0, 1.0]
    assert class_weights([0, 0, 0, 1], 2).tolist() == pytest.approx([4 / 6, 2.0])


@pytest.mark.parametrize("weighted", [False, True])
def test_soft_targets_reduce_to_cross_entropy_on_one_hot(weighted):
    torch.manual_seed(0)
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    weight = torch.tensor([0.5, 1.0, 2.0]) if weighted else None
    loss = ClassificationLoss(weight)
    torch.testing.assert_close(loss(logits, F.one_hot(y, 3).float()), F.cross_entropy(logits, y, weight=weight))


def test_mixup_makes_soft_targets_with_smoothing():
    cfg = FinetuneConfig(mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 1, 0])
    mixed_x, soft = build_mixup(cfg, 2)(x, y)
    assert soft.shape == (4, 2) and torch.allclose(soft.sum(1), torch.ones(4))
    assert build_mixup(FinetuneConfig(), 2) is None


def test_lr_schedule_warmup_then_cosine_to_min_lr():
    cfg = FinetuneConfig(lr=1e-3, min_lr=1e-5, warmup_epochs=2, epochs=10)
    assert lr_at(0, cfg) == 0.0 and lr_at(1, cfg) == pytest.approx(5e-4)
    assert lr_at(2, cfg) == pytest.approx(1e-3)
    assert lr_at(6, cfg) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(10, cfg) == pytest.approx(1e-5)


def test_layer_decay_on_vits_only():
    vit, _ = build_vit_classifier(None, 2, preset="mae_vit_tiny_patch8")
    scales = {round(g["lr_scale"], 6) for g in build_optimizer(vit, FinetuneConfig(layer_decay=0.5)).param_groups}
    # 4 blocks: embeddings 0.5^5 ... head 1.0
    assert scales == {round(0.5**i, 6) for i in range(6)}
    cnn = timm.create_model("resnet18", pretrained=False, num_classes=2)
    assert {g["lr_scale"] for g in build_optimizer(cnn, FinetuneConfig(layer_decay=0.5)).param_groups} == {1.0}
    no_decay = [g for g in build_optimizer(vit, FinetuneConfig()).param_groups if g["weight_decay"] == 0.0]
    assert any(p is vit.pos_embed for g in no_decay for p in g["params"])


def test_early_stopping_when_validation_f1_stops_improving(tmp_path):
    torch.manual_seed(0)
    vit, _ = build_vit_classifier(None, 2, preset="mae_vit_tiny_patch8")
    # A learning rate this small leaves the predictions, hence the F1, unchanged: no epoch improves.
    cfg = FinetuneConfig(epochs=6, patience=2, lr=1e-12, min_lr=0, batch_size=8, num_workers=0)
    result = train_one(vit, Tensors(16), Tensors(8, seed=1), ["a", "b"], cfg, tmp_path, log=lambda m: None)
    assert [h["epoch"] for h in result.history] == [0, 1, 2] and result.best_epoch == 0
    assert result.scores.shape == (8, 2) and result.y_true.tolist() == [0, 1] * 4
    assert (tmp_path / "best_model.pt").is_file() and (tmp_path / "history.json").is_file()
    assert set(result.history[0]) >= {"train_loss", "val_f1", "val_accuracy", "val_auroc", "lr", "seconds"}
    assert 0.0 <= result.history[0]["val_auroc"] <= 1.0


def test_macro_f1_selection_does_not_prefer_calling_everything_positive():
    # On a balanced binary set a 60%-accurate epoch has positive-class F1 0.6, below the 0.667 of an epoch
    # that calls every image positive; macro F1 ranks them the other way (0.6 against 0.333).
    y = np.array([0, 1] * 10)
    everything_positive = classification_metrics(y, np.ones_like(y), 2, class_names=["a", "b"], positive_class="b")
    sixty_percent = y.copy()
    sixty_percent[:8] = 1 - sixty_percent[:8]  # 12 of 20 right, 6 per class
    learnt = classification_metrics(y, sixty_percent, 2, class_names=["a", "b"], positive_class="b")
    assert selection_score(everything_positive, "f1") == pytest.approx(2 / 3)
    assert selection_score(learnt, "f1") == pytest.approx(0.6)
    assert selection_score(everything_positive, "macro_f1") == pytest.approx(1 / 3)
    assert selection_score(learnt, "macro_f1") == pytest.approx(0.6)


def test_training_with_mixup_odd_batches_and_class_weights(tmp_path):
    torch.manual_seed(0)
    train = Tensors(21)
    train.x[torch.tensor(train.targets) == 1] += 1.0  # an easy brightness cue
    vit, _ = build_vit_classifier(None, 2, preset="mae_vit_tiny_patch8")
    cfg = FinetuneConfig(epochs=3, batch_size=5, lr=1e-3, warmup_epochs=0, mixup=0.8, cutmix=1.0,
                         class_weighted=True, num_workers=0, save_model=False)
    result = train_one(vit, train, train, ["a", "b"], cfg, tmp_path, log=lambda m: None)
    losses = [h["train_loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and len(losses) == 3
    assert not (tmp_path / "best_model.pt").exists()


def _labelled(groups, column):
    data = LabelledImages([(f"img{i}.png", i % 2) for i in range(len(groups))], ["a", "b"])
    data.groups, data.group_column = list(groups), column
    return data


def test_protocol_choice_follows_the_csv_columns():
    cfg = FinetuneConfig(seed=3)
    name, specs = plan_folds(cfg, _labelled(["2", "1", "2", "1", "3", "3"], "fold"))
    assert name == "kfold-official" and [s.name for s in specs] == ["fold1", "fold2", "fold3"]
    assert [s.seed for s in specs] == [3, 4, 5] and specs[0].val_idx.tolist() == [1, 3]
    name, specs = plan_folds(cfg, _labelled(["train", "test", "train", "train"], "split"))
    assert name == "split" and specs[0].val_idx.tolist() == [1]
    name, specs = plan_folds(FinetuneConfig(protocol="holdout"), _labelled(["1"] * 10, "fold"))
    assert name == "holdout-0.20" and specs[0].val_idx.size == 2
    with pytest.raises(ValueError, match="split column must hold"):
        plan_folds(cfg, _labelled(["train", "dev", "val", "train"], "split"))
    with pytest.raises(ValueError, match="needs a CSV with a split column"):
        plan_folds(FinetuneConfig(protocol="split"), _labelled(["1", "2"], "fold"))


def test_positive_class_resolution():
    assert positive_class(FinetuneConfig(), ["benign", "malignant"]) == "malignant"
    assert positive_class(FinetuneConfig(dataset="gist514"), ["GIST", "leiomyoma"]) == "GIST"
    assert positive_class(FinetuneConfig(positive_class="benign"), ["benign", "malignant"]) == "benign"
    assert positive_class(FinetuneConfig(), ["a", "b", "c"]) is None
    with pytest.raises(ValueError, match="not one of"):
        positive_class(FinetuneConfig(positive_class="cancer"), ["benign", "malignant"])


def test_config_rejects_raw_without_dataset_and_unknown_models():
    with pytest.raises(ConfigError, match="raw needs dataset"):
        load_config(FinetuneConfig, None, ["raw=/data/BUSBRA"])
    with pytest.raises(ConfigError, match="model"):
        load_config(FinetuneConfig, None, ["model=densenet121"])
