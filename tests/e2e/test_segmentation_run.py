"""End-to-end segmentation fine-tune on synthetic lesions, in process (usfmae.commands.finetune.segmentation) and through the
launcher (`python launch/finetune.py --task segmentation`): metrics.json, history, mask PNGs."""

import json

import numpy as np
import pytest
from PIL import Image

from usfmae.checkpoint import save_safetensors
from usfmae.commands.finetune import segmentation
from usfmae.model import create_model
from usfmae.testing.synthetic import write_segmentation

from helpers import BIN, REPO, run

REPO_CONFIG = str(REPO / "configs" / "finetune_seg_tiny.yaml")


def launcher(argv: list[str]) -> int:
    """The fine-tune launcher as a user runs it; fails the test with its output on a non-zero exit."""
    run([BIN / "python", REPO / "launch/finetune.py", "--task", "segmentation", *argv], cwd=REPO)
    return 0


@pytest.mark.parametrize("entry", [segmentation, launcher], ids=["in_process", "launcher"])
def test_segmentation_finetune_end_to_end(tmp_path, entry):
    # 72 px scans for a 64 px encoder: inputs are resized, predictions go back to 72 x 72.
    data = write_segmentation(tmp_path / "seg", n=12, seed=3, size=72)
    ckpt = save_safetensors(create_model("mae_vit_tiny_patch8").state_dict(), tmp_path / "tiny.safetensors",
                            {"format": "usfmae-mae", "preset": "mae_vit_tiny_patch8", "model_overrides": {}})
    out = tmp_path / "run"
    code = entry(["--checkpoint", str(ckpt), "--data", str(data), "--output", str(out), "--config", REPO_CONFIG,
                 "--set", "epochs=2", "--set", "batch_size=8", "--set", "val_fraction=0.25"])
    assert code == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["dice"] <= 1.0 and 0.0 <= metrics["iou"] <= metrics["dice"] + 1e-12  # IoU <= Dice
    assert metrics["train_images"] == 9 and metrics["val_images"] == 3 and metrics["num_images"] == 3
    assert metrics["best_epoch"] in (1, 2) and "0 missing, 0 unexpected" in metrics["loading"]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert max(h["val_dice"] for h in history) == metrics["dice"]  # the best epoch is the one reported

    # One 0/255 PNG per validation image, at the image's own size, consistent with the per-image scores.
    written = sorted(p.name for p in (out / "masks").glob("*.png"))
    assert written == sorted(f"{row['name']}.png" for row in metrics["per_image"])
    for row in metrics["per_image"]:
        pred = np.asarray(Image.open(out / "masks" / f"{row['name']}.png"))
        assert pred.shape == (72, 72) and set(np.unique(pred).tolist()) <= {0, 255}
        assert int((pred == 255).sum()) == row["pred_pixels"]
        truth = np.asarray(Image.open(data / "masks" / f"{row['name']}.png")) > 127
        assert int(truth.sum()) == row["true_pixels"]
    assert (out / "config.yaml").is_file()


def test_bad_config_value_is_exit_code_2(tmp_path, capsys):
    assert segmentation(["--data", str(tmp_path), "--output", str(tmp_path / "o"), "--set", "threshold=2"]) == 2
    assert "threshold" in capsys.readouterr().err
