"""Folder and CSV datasets, image loading, and the fine-tuning transforms."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from usfmae.constants import IMAGENET_MEAN, IMAGENET_STD
from usfmae.data.labelled import CsvDataset, FolderDataset, load_rgb, transforms_for


def _save(path, mode="L", size=(20, 16), value=128, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)).save(path)
    else:
        Image.new(mode, size, value if mode == "L" else (value, 0, 255)).save(path, format=fmt)
    return path


def test_load_rgb_gray_becomes_three_equal_channels(tmp_path):
    image = load_rgb(_save(tmp_path / "g.png", value=77))
    assert image.mode == "RGB"
    assert np.asarray(image)[0, 0].tolist() == [77, 77, 77]
    assert load_rgb(_save(tmp_path / "c.jpg", mode="RGB", fmt="JPEG")).mode == "RGB"


def test_load_rgb_16bit_tiff_is_stretched_as_the_readers_do_not_clipped(tmp_path):
    path = tmp_path / "deep.tif"
    Image.fromarray(np.array([[1000, 20500, 40000]] * 4, dtype=np.uint16)).save(path)
    image = np.asarray(load_rgb(path))
    assert image.shape == (4, 3, 3)
    assert image[0, :, 0].tolist() == [0, 128, 255] and (image == image[:, :, :1]).all()
    flat = load_rgb(_save(tmp_path / "flat.tif", mode="I;16", value=257 * 100))  # no range to stretch
    assert np.asarray(flat)[0, 0].tolist() == [0, 0, 0]


def test_load_rgb_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_rgb(tmp_path / "nope.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png"):
        load_rgb(empty)
    good = _save(tmp_path / "full.png", size=(64, 64))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated.png"):
        load_rgb(truncated)


def test_folder_dataset_sorted_classes_and_extensions(tmp_path):
    _save(tmp_path / "malignant" / "m1.png")
    _save(tmp_path / "benign" / "b2.JPG", mode="RGB", fmt="JPEG")
    _save(tmp_path / "benign" / "b1.bmp")
    _save(tmp_path / "benign" / "nested" / "b3.tiff")
    (tmp_path / "benign" / "notes.txt").write_text("not an image")
    ds = FolderDataset(tmp_path, transform=transforms_for(train=False, image_size=32))
    assert ds.classes == ["benign", "malignant"]
    assert ds.targets == [0, 0, 0, 1]
    assert [p.split("/")[-1] for p, _ in ds.samples] == ["b1.bmp", "b2.JPG", "b3.tiff", "m1.png"]
    image, label = ds[3]
    assert image.shape == (3, 32, 32) and label == 1


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        FolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        FolderDataset(tmp_path)
    _save(tmp_path / "a" / "x.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"class folder .*b has no images"):
        FolderDataset(tmp_path)


def _csv(path, text):
    path.write_text(text)
    return path


def test_csv_dataset_string_labels_and_folds(tmp_path):
    for name in ["a.png", "b.png", "c.png", "d.png"]:
        _save(tmp_path / "img" / name)
    csv_path = _csv(tmp_path / "data.csv",
                    "path,label,fold\nimg/a.png,malignant,1\nimg/b.png,benign,2\n"
                    "img/c.png,benign,1\n\nimg/d.png,benign,2\n")
    full = CsvDataset(csv_path)
    assert full.classes == ["benign", "malignant"]
    assert full.targets == [1, 0, 0, 0]
    assert full.groups == ["1", "2", "1", "2"]
    assert full.samples[0][0] == str(tmp_path / "img" / "a.png")
    val = CsvDataset(csv_path, fold=2, split="val")
    train = CsvDataset(csv_path, fold=2, split="train")
    # Fold 2 has no malignant sample, yet the class list stays the same.
    assert val.classes == ["benign", "malignant"] and val.targets == [0, 0]
    assert [p.split("/")[-1] for p, _ in train.samples] == ["a.png", "c.png"]
    with pytest.raises(ValueError, match="fold=<id>"):
        CsvDataset(csv_path, split="train")


def test_csv_dataset_split_column_int_labels_and_root(tmp_path):
    for name in ["a.png", "b.png", "c.png"]:
        _save(tmp_path / "images" / name)
    (tmp_path / "meta").mkdir()
    csv_path = _csv(tmp_path / "meta" / "split.csv", "path,label,split\na.png,0,train\nb.png,3,val\nc.png,1,train\n")
    ds = CsvDataset(csv_path, root=tmp_path / "images", split="train")
    assert ds.classes == ["0", "1", "2", "3"]
    assert ds.targets == [0, 1]
    named = CsvDataset(csv_path, root=tmp_path / "images", split="val", classes=["w", "x", "y", "z"])
    assert named.targets == [3] and named.classes == ["w", "x", "y", "z"]
    image, _ = CsvDataset(csv_path, root=tmp_path / "images", transform=transforms_for(False, 16))[0]
    assert image.shape == (3, 16, 16)


def test_csv_dataset_errors_name_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        CsvDataset(tmp_path / "absent.csv")
    bad_header = _csv(tmp_path / "h.csv", "file,label\nx.png,a\n")
    with pytest.raises(ValueError, match="lacks column"):
        CsvDataset(bad_header)
    missing_image = _csv(tmp_path / "m.csv", "path,label\nghost.png,a\n")
    with pytest.raises(FileNotFoundError, match=r"m.csv line 2: image not found: .*ghost.png"):
        CsvDataset(missing_image)
    _save(tmp_path / "x.png")
    unknown = _csv(tmp_path / "u.csv", "path,label\nx.png,a\n")
    with pytest.raises(ValueError, match="line 2: label 'a'"):
        CsvDataset(unknown, classes=["b", "c"])
    empty_label = _csv(tmp_path / "e.csv", "path,label\nx.png,\n")
    with pytest.raises(ValueError, match="line 2: empty path or label"):
        CsvDataset(empty_label)
    with pytest.raises(ValueError, match="no data rows"):
        CsvDataset(_csv(tmp_path / "n.csv", "path,label\n"))


def test_eval_transform_resizes_and_normalises():
    image = Image.new("RGB", (50, 30), (255, 0, 128))
    tensor = transforms_for(train=False, image_size=24)(image)
    assert tensor.shape == (3, 24, 24)
    expected = [(255 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], (0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]]
    assert tensor[0, 12, 12].item() == pytest.approx(expected[0], abs=1e-5)
    assert tensor[1, 12, 12].item() == pytest.approx(expected[1], abs=1e-5)


def test_train_transform_shapes_and_randomness():
    torch.manual_seed(0)
    gradient = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))).convert("RGB")
    transform = transforms_for(train=True, image_size=32)
    outputs = [transform(gradient) for _ in range(4)]
    assert all(o.shape == (3, 32, 32) for o in outputs)
    assert not torch.equal(outputs[0], outputs[1])


def test_random_resized_crop_with_scale_above_one_never_exceeds_the_image():
    # What torchvision does with the paper's scale=(0.5, 2.0): crops above 100% area are redrawn,
    # so every crop taken covers between ~50% and 100% of the image.
    torch.manual_seed(0)
    image = torch.zeros(3, 100, 100)
    crop = v2.RandomResizedCrop(32, scale=(0.5, 2.0), ratio=(3 / 4, 4 / 3))  # the v2 transform transforms_for uses
    fractions = []
    for _ in range(2000):
        params = crop.make_params([image])
        fractions.append(params["height"] * params["width"] / 100 / 100)
    fractions = np.array(fractions)
    assert fractions.max() <= 1.0
    assert fractions.min() >= 0.48  # 0.5 up to rounding of the crop sides
    assert np.mean(fractions > 0.9) > 0.05
