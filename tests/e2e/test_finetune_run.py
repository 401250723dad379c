"""Fine-tuning end to end on tiny data: launcher, protocols, encoder loading, baselines, DDP."""

import csv
import json

import numpy as np
import pytest
import torch

from safetensors.torch import load_file

from usfmae.checkpoint import save_safetensors
from usfmae.commands import finetune as launch_finetune
from usfmae.finetune import FinetuneConfig, build_classifier, run_finetune, table2_from_runs
from usfmae.finetune.encoder import build_vit_classifier
from usfmae.model import create_model
from usfmae.testing.synthetic import write_labeled

from helpers import BIN, REPO, run

pytestmark = pytest.mark.usefixtures("one_thread", "no_network")


FAST = {"epochs": 1, "batch_size": 8, "num_workers": 0, "save_model": False}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A pretraining export as launch/pretrain.py writes it: MAE safetensors + preset metadata."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pre") / "model.safetensors"
    save_safetensors(create_model("mae_vit_tiny_patch8").state_dict(), path,
                     {"format": "usfmae-mae", "preset": "mae_vit_tiny_patch8", "model_overrides": {}})
    return path


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    return write_labeled(tmp_path_factory.mktemp("labeled"), n_per_class=10, seed=4, size=64)


def _csv(path, labeled, column, value_of):
    """path,label,<column> over the labeled folder; value_of(i, label) gives each row's fold/split."""
    images = sorted(labeled.rglob("*.png"))
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", column])
        for i, image in enumerate(images):
            writer.writerow([image, image.parent.name, value_of(i, image.parent.name)])
    return path


def test_encoder_weights_come_from_the_export(export):
    saved = load_file(export)
    model, size, summary = build_classifier(FinetuneConfig(checkpoint=str(export)), num_classes=3)
    torch.manual_seed(123)
    scratch, _, _ = build_classifier(FinetuneConfig(preset="mae_vit_tiny_patch8"), num_classes=3)
    assert size == 64 and model.head.out_features == 3
    for key in ("patch_embed.proj.weight", "blocks.3.mlp.fc2.weight", "cls_token"):
        assert torch.equal(model.state_dict()[key], saved[key])
        assert not torch.equal(scratch.state_dict()[key], saved[key])
    assert "missing: fc_norm.weight, fc_norm.bias, head.weight, head.bias" in summary


def test_encoder_at_another_input_size_resamples_position_embeddings(export):
    model, size, summary = build_classifier(FinetuneConfig(checkpoint=str(export), image_size=96), 2)
    assert size == 96 and model.pos_embed.shape == (1, 1 + 12 * 12, 96)
    assert "pos_embed [1, 65, 96]->[1, 145, 96]" in summary
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 2)


def test_encoder_without_head_is_a_feature_extractor(export):
    # num_classes=0, as in timm: no head (Identity), the pooled features come out
    model, report = build_vit_classifier(str(export), 0)
    assert isinstance(model.head, torch.nn.Identity) and model.num_classes == 0
    assert "head.weight" not in model.state_dict() and "head.weight" not in report.missing
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], load_file(export)["blocks.0.attn.qkv.weight"])
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 96)


def test_launcher_from_export_folder_holdout(export, labeled, tmp_path, capsys):
    out = tmp_path / "ft"
    rc = launch_finetune.main(["--checkpoint", str(export), "--data", str(labeled), "--output", str(out),
                               "--set", "epochs=2", "--set", "batch_size=8", "--set", "num_workers=0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "F1" in printed and "| USF-MAE |" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"benign", "malignant"}
    assert metrics["binary"]["positive_class"] == "malignant"
    assert sum(map(sum, metrics["confusion_matrix"])) == 4  # stratified 20% of 20 images
    assert metrics["protocol"] == "holdout-0.20" and metrics["seeds"] == [0] and metrics["seed"] == 0
    assert (metrics["n_train"], metrics["n_val"], metrics["model"]) == (16, 4, "usfmae")
    assert len(json.loads((out / "history.json").read_text())) == 2
    for name in ("best_model.pt", "config.yaml", "table2.md", "confusion_matrix.png", "predictions.csv"):
        assert (out / name).is_file(), name
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    state = torch.load(out / "best_model.pt", weights_only=True)
    assert state["head.weight"].shape == (2, 96)


def test_kfold_on_official_folds(export, labeled, tmp_path):
    folds_of = {}

    def fold(i, label):
        folds_of[i] = 1 + i % 3  # three official folds, whatever the class
        return folds_of[i]

    data = _csv(tmp_path / "data.csv", labeled, "fold", fold)
    cfg = FinetuneConfig(checkpoint=str(export), data=str(data), output_dir=str(tmp_path / "out"), seed=7, **FAST)
    summary = run_finetune(cfg, log=lambda message: None)

    assert summary["protocol"] == "kfold-official" and summary["num_folds"] == 3
    assert [f["name"] for f in summary["folds"]] == ["fold1", "fold2", "fold3"]
    assert summary["seeds"] == [7, 8, 9]
    counts = np.bincount(list(folds_of.values()))[1:]
    assert [f["n_val"] for f in summary["folds"]] == counts.tolist()
    f1 = [f["metrics"]["binary"]["f1"] for f in summary["folds"]]
    assert summary["mean"]["binary.f1"] == pytest.approx(np.mean(f1))
    assert summary["std"]["binary.f1"] == pytest.approx(np.std(f1, ddof=1))
    assert sum(map(sum, summary["confusion_matrix"])) == 20  # out-of-fold predictions pooled

    with (tmp_path / "out" / "predictions.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 20 and len({r["path"] for r in rows}) == 20
    by_path = {r["path"]: r["fold"] for r in rows}
    with data.open() as stream:
        assert all(by_path[r["path"]] == f"fold{r['fold']}" for r in csv.DictReader(stream))
    assert "±" in (tmp_path / "out" / "table2.md").read_text()
    for name in ("fold1", "fold2", "fold3"):
        assert (tmp_path / "out" / name / "confusion_matrix.png").is_file()
        assert (tmp_path / "out" / name / "history.json").is_file()


def test_stratified_kfold_without_fold_column(export, labeled, tmp_path):
    cfg = FinetuneConfig(checkpoint=str(export), data=str(labeled), protocol="kfold", folds=2,
                         output_dir=str(tmp_path / "out"), **FAST)
    summary = run_finetune(cfg, log=lambda message: None)
    assert summary["protocol"] == "kfold-stratified-2"
    assert [f["n_val"] for f in summary["folds"]] == [10, 10]
    for fold in summary["folds"]:
        assert [c["support"] for c in fold["metrics"]["per_class"].values()] == [5, 5]


def test_official_split_column(export, labeled, tmp_path):
    data = _csv(tmp_path / "data.csv", labeled, "split", lambda i, label: "val" if i % 4 == 0 else "train")
    cfg = FinetuneConfig(checkpoint=str(export), data=str(data), output_dir=str(tmp_path / "out"), **FAST)
    summary = run_finetune(cfg, log=lambda message: None)
    assert summary["protocol"] == "split" and (summary["n_train"], summary["n_val"]) == (15, 5)


def test_mmotu_adapter_run_multiclass_micro(export, tmp_path):
    """--dataset mmotu --raw: the adapter runs first; 8 classes in the official order, micro averages."""
    from PIL import Image

    from usfmae.finetune.adapters import MMOTU_CLASSES

    root = tmp_path / "OTU_2d"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = {"train": [], "val": []}
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(root / "images" / f"{i}.JPG")
        lines["val" if i >= 16 else "train"].append(f"{i}.JPG {i % 8}")
    for split, entries in lines.items():
        (root / f"{split}_cls.txt").write_text("\n".join(entries) + "\n")

    cfg = FinetuneConfig(checkpoint=str(export), dataset="mmotu", raw=str(root), output_dir=str(tmp_path / "out"),
                         **FAST)
    summary = run_finetune(cfg, log=lambda message: None)
    assert (tmp_path / "out" / "mmotu.csv").is_file()
    assert summary["class_names"] == list(MMOTU_CLASSES) and "binary" not in summary
    assert summary["protocol"] == "split" and summary["n_val"] == 8
    assert summary["micro"]["precision"] == summary["micro"]["recall"] == summary["micro"]["f1"]
    assert "MMOTU-2D: micro average" in (tmp_path / "out" / "table2.md").read_text()


def test_vit_baseline_imagenet_weights_load_whole_with_either_head(tmp_path):
    # A timm ImageNet ViT-B/16 has norm.* and a cls-token head; configs/finetune.yaml pools the patch tokens.
    import timm
    from safetensors.torch import save_file

    imagenet = timm.create_model("vit_base_patch16_224", pretrained=False).state_dict()
    path = tmp_path / "vit_base_patch16_224.safetensors"
    save_file(imagenet, path)
    for pool in ("avg", "token"):
        cfg = FinetuneConfig(model="vit_base_patch16_224", checkpoint=str(path), image_size=32, global_pool=pool)
        model, size, summary = build_classifier(cfg, num_classes=2)
        assert size == 32 and model.global_pool == pool and "weights from" in summary
        assert torch.equal(model.state_dict()["norm.weight"], imagenet["norm.weight"])
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)


def test_resnet50_baseline_under_the_same_protocol(labeled, tmp_path):
    cfg = FinetuneConfig(model="resnet50", image_size=32, data=str(labeled), output_dir=str(tmp_path / "out"),
                         batch_size=10, epochs=1, num_workers=0, save_model=False)
    summary = run_finetune(cfg, log=lambda message: None)
    assert summary["model"] == "resnet50" and summary["loading"] == "resnet50: random init"
    assert sum(map(sum, summary["confusion_matrix"])) == 4
    assert "| ResNet-50 |" in (tmp_path / "out" / "table2.md").read_text()


def test_baseline_weights_missing_is_a_clear_error(labeled, tmp_path):
    missing = tmp_path / "vgg19_imagenet.pth"
    cfg = FinetuneConfig(model="vgg19", checkpoint=str(missing), data=str(labeled), output_dir=str(tmp_path / "o"),
                         **FAST)
    with pytest.raises(FileNotFoundError, match="vgg19_imagenet.pth"):
        run_finetune(cfg, log=lambda message: None)


def test_table2_from_runs(tmp_path):
    def fake(model, dataset, f1):
        metrics = {"precision": f1, "recall": f1, "f1": f1}
        summary = {"model": model, "dataset": dataset, "num_folds": 1, "binary": {**metrics, "positive_class": "m"},
                   "micro": metrics}
        path = tmp_path / f"{model}_{dataset}.json"
        path.write_text(json.dumps(summary))
        return path

    files = [fake("usfmae", "gist514", 0.8), fake("resnet50", "busbra", 0.7), fake("usfmae", "busbra", 0.9)]
    table = table2_from_runs(files)
    header, _, first, second = table.splitlines()[:4]
    assert header.index("BUS-BRA") < header.index("GIST514-DB")
    assert first.startswith("| ResNet-50 | 70.0 | 70.0 | 70.0 | – |")
    assert second.startswith("| USF-MAE | 90.0 |") and second.rstrip(" |").endswith("80.0")
    with pytest.raises(ValueError, match="second run"):
        table2_from_runs(files + [fake("usfmae", "busbra", 0.5)])


@pytest.mark.slow
def test_torchrun_two_cpu_processes(export, labeled, tmp_path):
    data = _csv(tmp_path / "data.csv", labeled, "fold", lambda i, label: 1 + i % 2)
    out = tmp_path / "out"
    proc = run([BIN / "torchrun", "--standalone", "--nproc_per_node", "2", REPO / "launch/finetune.py",
                "--checkpoint", export, "--data", data, "--output", out, "--set", "epochs=2",
                "--set", "batch_size=4", "--set", "num_workers=0", "--set", "mixup=0.8", "--set", "cutmix=1.0"],
               cwd=REPO)
    assert proc.stdout.count("[finetune] F1") == 1  # rank 0 alone reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["num_folds"] == 2
    assert sum(map(sum, metrics["confusion_matrix"])) == 20  # every validation image scored once
    assert [len(json.loads((out / f / "history.json").read_text())) for f in ("fold1", "fold2")] == [2, 2]
