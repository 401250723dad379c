"""The OpenUS-46 registry (paper Table 1) and the guards against evaluation-data leaks."""

import logging
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from usfmae.io import ReadError, content_key, iter_frames
from usfmae.registry import (
    DEFAULT_REGISTRY_PATH, DownstreamDatasetError, Registry, check_pretrain_allowed, find_leaks, load_registry,
)

DOWNSTREAM = {"BUS-BRA": 1875, "MMOTU-2D": 1469, "GIST514-DB": 514}


def test_registry_matches_table_1():
    registry = load_registry()
    assert len(registry.datasets) == 46
    assert registry.total_images == registry.paper_total_images == 374_192
    assert {d.name: d.images for d in registry.datasets if d.role == "downstream"} == DOWNSTREAM
    pretrain = sum(d.images for d in registry.datasets if d.role == "pretrain")
    assert pretrain == 374_192 - 3_858 == 370_334  # the abstract's "approximately 370,000"
    assert registry.get("EchoNet-Dynamic").images == 112_740 and registry.get("FEFT").references == [69, 70]
    assert sorted(d.name for d in registry.datasets if not d.in_us43d) == [
        "CAMUS_public", "Cactus Dataset", "Ultrasound Fetus Dataset"]


def test_paper_discrepancies_are_recorded():
    registry = load_registry()
    # §2.1 claims 23 applications; Table 1's anatomy column has 27 labels (noted in the YAML header).
    assert len({d.anatomy for d in registry.datasets}) == 27
    header = DEFAULT_REGISTRY_PATH.read_text().split("name: OpenUS-46")[0]
    assert "10,578" in header and "23 clinical applications" in header


def test_registry_rejects_rows_that_do_not_add_up(tmp_path):
    raw = yaml.safe_load(DEFAULT_REGISTRY_PATH.read_text())
    raw["datasets"][0]["images"] += 1
    with pytest.raises(ValidationError, match="sum to 374193, paper states 374192"):
        Registry.model_validate(raw)
    raw["datasets"][0]["images"] -= 1
    raw["datasets"].append(dict(raw["datasets"][1], images=0, name="abdomen-us"))  # duplicate of AbdomenUS
    with pytest.raises(ValidationError, match="duplicate dataset names"):
        Registry.model_validate(raw)
    raw["datasets"].pop()
    raw["datasets"][0]["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        Registry.model_validate(raw)


def test_load_registry_explicit_path_and_missing(tmp_path):
    copy = tmp_path / "reg.yaml"
    shutil.copy(DEFAULT_REGISTRY_PATH, copy)
    assert load_registry(copy) == load_registry()
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_registry(tmp_path / "nope.yaml")


def test_downstream_datasets_refused_unless_forced(caplog):
    check_pretrain_allowed(["EchoNet-Dynamic", "CAMUS_public", "our-hospital-archive"])
    for name in ["BUS-BRA", "bus_bra", "MMOTU-2D", "gist514 db"]:
        with pytest.raises(DownstreamDatasetError, match="must not be used for pretraining"):
            check_pretrain_allowed(["HC", name])
    with caplog.at_level(logging.WARNING):
        check_pretrain_allowed(["BUS-BRA", "MMOTU-2D"], force=True)
    assert "forced" in caplog.text and "BUS-BRA" in caplog.text and "MMOTU-2D" in caplog.text


def test_find_leaks_reports_a_planted_duplicate(tmp_path):
    rng = np.random.default_rng(0)
    build = tmp_path / "build"
    evaluation = tmp_path / "eval"
    (evaluation / "benign").mkdir(parents=True)
    build.mkdir()
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    for i, image in enumerate(images[:3]):
        Image.fromarray(image).save(build / f"{i}.png")
    # The evaluation folder holds one image that is also in the build (under another name and format).
    Image.fromarray(images[1]).save(evaluation / "benign" / "case_9.bmp")
    Image.fromarray(images[3]).save(evaluation / "benign" / "case_1.png")
    (evaluation / "labels.csv").write_text("file,label\n")
    build_keys = {content_key(f.image) for p in sorted(build.iterdir()) for f in iter_frames(p)}
    leaks = find_leaks(evaluation, build_keys)
    assert [(leak.relative_path, leak.index, leak.key) for leak in leaks] == [
        ("benign/case_9.bmp", 0, content_key(images[1]))]
    assert find_leaks(evaluation, set()) == []


def test_find_leaks_never_reads_through_a_link_out_of_the_evaluation_folder(tmp_path):
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(outside)
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "case_1.png").symlink_to(outside)
    with pytest.raises(ReadError, match="outside"):
        find_leaks(evaluation, {content_key(np.zeros((16, 16, 3), np.uint8))})


def test_the_downstream_datasets_of_the_registry_are_the_fine_tune_registry_s():
    """Two registries name the evaluation sets: the OpenUS-46 one keeps them out of pretraining, the fine-tune
    one defines their classes. A set added to one and not the other would be trained on or not evaluated."""
    from usfmae.finetune.registry import DOWNSTREAM

    registry = load_registry()
    assert sorted(registry.downstream_names()) == sorted(d.title for d in DOWNSTREAM.values())
    assert all(registry.get(d.title).role == "downstream" for d in DOWNSTREAM.values())
