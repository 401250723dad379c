"""Shard builder without Ray: planning, estimates, tars, sinks, samples, resume, guards, leak check."""

import hashlib
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import webdataset as wds
from pydicom.data import get_testdata_file

from usfmae.config import ConfigError
from usfmae.io import ReaderConfig, content_key
from usfmae.registry import DownstreamDatasetError
from usfmae.shards.build import prepare_build, run_local
from usfmae.shards.config import BuildConfig, load_build_config
from usfmae.shards.estimate import estimate_frames, kept_count
from usfmae.shards.plan import InputRef, plan_shards
from usfmae.shards.sink import LocalSink
from usfmae.shards.tar import SampleTar
from usfmae.testing.corpus import PYDICOM_ULTRASOUND, write_cine_avi, write_images, write_mixed_corpus
from usfmae.testing.synthetic import generate_ultrasound

from helpers import REPO

TEXT_VRS = ("PN", "LO", "SH", "DA", "TM", "DT", "UI", "ST", "LT", "AE")


def config(inputs: Path, output: Path, **kw) -> BuildConfig:
    base = {"datasets": [{"name": "mix", "path": str(inputs)}], "output": str(output), "salt": "test-salt",
            "shard_size": 5}
    return BuildConfig.model_validate({**base, **kw})


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def decode_png(data: bytes) -> np.ndarray:
    """Stored PNG -> [H, W, 3] RGB (gray samples are stored as 1 channel: replicated)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB if img.ndim == 2 else cv2.COLOR_BGR2RGB)


def string_values(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else []
    return [s for item in items for s in string_values(item)]


def read_samples(out: Path) -> list[dict]:
    urls = [str(out / s["name"]) for s in json.loads((out / "manifest.json").read_text())["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build of the mixed corpus (every kind, real pydicom DICOMs, broken files), cleaning on."""
    root = tmp_path_factory.mktemp("build")
    write_mixed_corpus(root / "in", n_images=6, size=96)
    report = run_local(config(root / "in", root / "out"))
    return root, report


# ---------------------------------------------------------------------------------------------- plan
def refs(n: int) -> list[InputRef]:
    return [InputRef("d", "a", "/data", f"f{i:03d}.png") for i in range(n)]


def test_plan_is_stable_and_assigns_every_input_once():
    inputs, estimates = refs(40), [1] * 40
    estimates[7] = 30  # a cine: alone it fills a 10-frame shard and more
    a = plan_shards(inputs, estimates, shard_size=10, seed=3)
    assert a == plan_shards(inputs, estimates, shard_size=10, seed=3)
    assert a != plan_shards(inputs, estimates, shard_size=10, seed=4)
    assigned = [ref for spec in a for ref in spec.inputs]
    assert sorted(assigned, key=lambda r: r.relpath) == inputs
    assert [s.name for s in a] == [f"shard-{i:06d}.tar" for i in range(len(a))]
    for spec in a[:-1]:  # every closed shard reached the target, and closed at the input that reached it
        frames = [estimates[int(r.relpath[1:4])] for r in spec.inputs]
        assert sum(frames) >= 10 and sum(frames[:-1]) < 10
    cine_shard = next(s for s in a if inputs[7] in s.inputs)
    assert cine_shard.inputs[-1] == inputs[7]


def test_plan_of_stills_cuts_exact_sizes_and_fingerprints_follow_settings():
    specs = plan_shards(refs(65), [1] * 65, shard_size=20, settings_digest="x")
    assert [len(s.inputs) for s in specs] == [20, 20, 20, 5]
    other = plan_shards(refs(65), [1] * 65, shard_size=20, settings_digest="y")
    assert all(s.fingerprint != o.fingerprint for s, o in zip(specs, other))
    moved = plan_shards([InputRef("d", "a", "/elsewhere", r.relpath) for r in refs(65)], [1] * 65, 20,
                        settings_digest="x")
    assert [s.fingerprint for s in moved] == [s.fingerprint for s in specs]  # a moved mount is the same data


def test_estimates_from_headers(tmp_path):
    files = write_mixed_corpus(tmp_path, n_images=1, size=64)
    cfg = ReaderConfig()
    assert estimate_frames(files["images"][0], cfg) == 1
    assert estimate_frames(files["video"][0], cfg) == 3  # 30 frames at 30 fps, kept at 3 fps
    assert estimate_frames(tmp_path / "dicom/examples_ybr_color.dcm", cfg) == 3  # 30-frame cine
    assert estimate_frames(tmp_path / "dicom/examples_palette.dcm", cfg) == 1
    assert estimate_frames(files["volume"][0], cfg) == 4
    assert estimate_frames(files["volume"][0], ReaderConfig(volume_stride=3)) == 2
    assert all(estimate_frames(p, cfg) == 1 for p in files["broken"])
    assert kept_count(100, 25.0, 3.0) == 12 and kept_count(5, 2.0, 3.0) == 5


# --------------------------------------------------------------------------------------- tar, sink
def test_sample_tar_is_deterministic_and_webdataset_readable(tmp_path):
    samples = [(f"{i:032x}", {"png": bytes([i]) * 10, "json": json.dumps({"i": i}).encode()}) for i in range(3)]

    def write() -> bytes:
        buf = io.BytesIO()
        with SampleTar(buf) as tar:
            for key, files in samples:
                tar.write(key, files)
        return buf.getvalue()

    data = write()
    assert data == write()
    (tmp_path / "a.tar").write_bytes(data)
    with tarfile.open(tmp_path / "a.tar") as tf:
        members = tf.getmembers()
    assert [m.name for m in members][:2] == [f"{0:032x}.json", f"{0:032x}.png"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o444)}
    read = list(wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in read] == [k for k, _ in samples]
    assert read[2]["png"] == bytes([2]) * 10


def test_local_sink_is_atomic_and_cleans_stale_temps(tmp_path):
    sink = LocalSink(str(tmp_path / "out"))
    sink.prepare()
    stale = tmp_path / "out" / ".shard-000001.tar.tmp999"
    stale.write_bytes(b"partial")
    (tmp_path / "out" / "keep.txt").write_text("user file")
    sink.prepare()
    assert not stale.exists() and (tmp_path / "out" / "keep.txt").exists()
    src = tmp_path / "elsewhere.bin"
    src.write_bytes(b"x" * 100)
    sink.put_file(src, "shard-000000.tar")  # another folder: copied to a temp name, then renamed
    sink.put_bytes(b"{}", "_parts/shard-000000.tar.json")
    assert not src.exists() and sink.size("shard-000000.tar") == 100
    assert sink.list("_parts") == ["_parts/shard-000000.tar.json"] and sink.get_bytes("missing") is None
    assert not list((tmp_path / "out").rglob(".*tmp*"))


# ------------------------------------------------------------------------------------ whole builds
def test_build_reports_every_input_and_rejects_broken_ones(built):
    root, report = built
    assert report["inputs_seen"] == 18
    reasons = {r["input"]: r["reason"] for r in report["rejected"]}
    assert reasons == {
        "broken/cut.dcm": reasons["broken/cut.dcm"],
        "broken/empty.dcm": "empty file (0 bytes)",
        "broken/notes.txt": "not a supported input (unknown extension and content)",
        "broken/random.jpg": "not a decodable image (corrupt, truncated or not an image)",
        "broken/truncated.png": "not a decodable image (corrupt, truncated or not an image)",
    }
    assert reasons["broken/cut.dcm"].startswith("truncated DICOM")
    # 7 images + video 3-1 + volume 4 + 3 DICOM stills + cine 3-1: frame 10 of each loop repeats frame 0
    assert report["near_duplicates"] == 2 and report["samples"] == 18 and report["frames_read"] == 20
    manifest = json.loads((root / "out/manifest.json").read_text())
    assert manifest["total_samples"] == 18 and manifest["datasets"] == {"mix": 18}
    for entry in manifest["shards"]:
        data = (root / "out" / entry["name"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert sum(s["samples"] for s in manifest["shards"]) == 18


def test_samples_are_clean_224px_pngs_keyed_by_content(built):
    root, _ = built
    samples = read_samples(root / "out")
    assert len(samples) == 18
    kinds, channels = {}, []
    for s in samples:
        image = decode_png(s["png"])  # [224, 224, 3] uint8 RGB
        assert image.shape == (224, 224, 3) and s["__key__"] == content_key(image)
        stored = cv2.imdecode(np.frombuffer(s["png"], np.uint8), cv2.IMREAD_UNCHANGED)
        gray = np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
        assert stored.ndim == (2 if gray else 3)  # gray scans are stored as 1-channel PNGs, colour as RGB
        channels.append(stored.ndim)
        meta = json.loads(s["json"])
        assert set(meta) == {"dataset", "anatomy", "source_kind", "index", "original_size", "source", "cleaning"}
        assert meta["dataset"] == "mix" and meta["anatomy"] == "unspecified" and len(meta["source"]) == 32
        assert meta["cleaning"]["mode"] == "fast" and 0 <= meta["cleaning"]["mask_fraction"] <= 1
        kinds.setdefault(meta["source_kind"], []).append(meta["index"])
    assert sorted(kinds["volume"]) == [0, 1, 2, 3] and sorted(kinds["video"]) == [0, 20]
    assert sorted(kinds["dicom"]) == [0, 0, 0, 0, 20]  # 3 stills + cine frames 0 and 20 (10 repeats 0)
    assert 2 in channels  # the corpus has gray scans


def test_no_dicom_tag_value_or_path_in_shards(built):
    root, _ = built
    blobs = [p.read_bytes() for p in sorted((root / "out").glob("*.tar"))]
    strings = []  # every string in the metadata except the salted source hash: even short values must not appear
    for p in sorted((root / "out").glob("*.tar")):
        with tarfile.open(p) as tf:
            for m in tf.getmembers():
                assert re.fullmatch(r"[0-9a-f]{32}\.(png|json)", m.name), m.name  # keys are content hashes
                if m.name.endswith(".json"):
                    meta = json.loads(tf.extractfile(m).read())
                    meta.pop("source")
                    strings += string_values(meta)
    long_values, identifying = set(), set()
    for name in PYDICOM_ULTRASOUND:
        ds = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)
        for el in ds.iterall():
            if el.VR in TEXT_VRS and el.value not in (None, "") and len(str(el.value)) >= 6:
                long_values.add(str(el.value))
        identifying |= {str(ds.get(k)) for k in ("PatientName", "PatientID", "InstitutionName", "StudyDate")
                        if ds.get(k)}
    assert len(long_values) > 30 and {"BAPTIST MED CTR", "CompressedSamples^US1", "20110525"} <= long_values
    for value in long_values:
        assert not any(value.encode() in blob for blob in blobs), value
    for value in identifying | {"examples_", "dicom/", "broken/", "scan_0", "loop.avi", str(root)}:
        assert not any(value in text for text in strings), value


def test_rerun_skips_finished_and_rebuilds_lost_shards_identically(built, tmp_path):
    root, _ = built
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    reference, manifest = shard_bytes(out), (out / "manifest.json").read_bytes()
    (out / "shard-000001.tar").unlink()  # killed after the rename? no marker would exist: both gone
    (out / "_parts/shard-000001.tar.json").unlink()
    (out / "_parts/shard-000003.tar.json").unlink()  # killed between the rename and the marker
    (out / ".shard-000002.tar.tmp4242").write_bytes(b"half a tar")  # killed mid-write
    report = run_local(config(root / "in", out))
    assert report["shards"] == {"total": 5, "built": 2, "resumed": 3}
    assert shard_bytes(out) == reference and (out / "manifest.json").read_bytes() == manifest
    assert not (out / ".shard-000002.tar.tmp4242").exists()
    report = run_local(config(root / "in", out))
    assert report["shards"]["resumed"] == 5 and report["samples"] == 18


def test_changed_settings_rebuild_every_shard(built, tmp_path):
    root, _ = built
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    report = run_local(config(root / "in", out, image_size=32, cleaning={"enabled": False}))
    assert report["shards"]["resumed"] == 0
    assert decode_png(read_samples(out)[0]["png"]).shape == (32, 32, 3)


def test_pending_build_hides_stale_manifest(built, tmp_path):
    root, _ = built
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    (out / "_parts/shard-000000.tar.json").unlink()
    plan = prepare_build(config(root / "in", out))
    assert [s.name for s in plan.pending] == ["shard-000000.tar"] and not (out / "manifest.json").exists()


def test_salt_keys_the_source_hash(tmp_path, monkeypatch):
    write_images(tmp_path / "in", 2, 64, seed=1)
    monkeypatch.delenv("USFMAE_SOURCE_SALT", raising=False)
    sources = {}
    for run, salt in (("a", "s1"), ("b", "s1"), ("c", "s2"), ("d", None), ("e", None)):
        run_local(config(tmp_path / "in", tmp_path / run, salt=salt, cleaning={"enabled": False}))
        sources[run] = sorted(json.loads(s["json"])["source"] for s in read_samples(tmp_path / run))
    assert sources["a"] == sources["b"] != sources["c"]
    assert sources["d"] != sources["e"]  # no salt configured: a random one per run
    assert json.loads((tmp_path / "d/report.json").read_text())["source_salt"].startswith("ephemeral")


def test_exact_duplicates_and_dedup_switch(tmp_path):
    paths = write_images(tmp_path / "in", 2, 64, seed=2)
    shutil.copyfile(paths[0], tmp_path / "in" / "copy.png")
    frame = np.full((48, 64, 3), 90, np.uint8)
    write_cine_avi(tmp_path / "in" / "still.avi", [frame] * 30)  # 3 kept frames, all the same
    report = run_local(config(tmp_path / "in", tmp_path / "a", shard_size=100, cleaning={"enabled": False}))
    assert (report["samples"], report["duplicates"], report["near_duplicates"]) == (3, 1, 2)
    report = run_local(config(tmp_path / "in", tmp_path / "b", shard_size=100, cleaning={"enabled": False},
                              dedup={"near_duplicates": False}))
    assert (report["samples"], report["duplicates"], report["near_duplicates"]) == (3, 3, 0)
    keys = [s["__key__"] for s in read_samples(tmp_path / "b")]
    assert len(keys) == len(set(keys)) == 3


def test_cine_cut_midway_is_rejected_whole_while_batched_with_other_inputs(tmp_path):
    write_images(tmp_path / "in", 3, 64, seed=8)
    cut = write_cine_avi(tmp_path / "in/cut.avi",
                         [generate_ultrasound(40 + i, 64, overlays=False).image for i in range(60)])
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # frames 0, 10, 20 decode, then it ends
    plan = prepare_build(config(tmp_path / "in", tmp_path / "plan", shard_size=100))
    order = [r.relpath for r in plan.specs[0].inputs]
    assert order.index("cut.avi") == 1  # its frames share batches with the stills around it
    for batch in (1, 2, 8):
        report = run_local(config(tmp_path / "in", tmp_path / f"b{batch}", shard_size=100, cleaning_batch=batch))
        assert [(r["input"], r["reason"]) for r in report["rejected"]] == [
            ("cut.avi", "truncated video: decoded 28 of 60 declared frames")]
        assert report["frames_read"] == 6 and report["samples"] == 3
        metas = [json.loads(s["json"]) for s in read_samples(tmp_path / f"b{batch}")]
        assert sorted(m["source_kind"] for m in metas) == ["image"] * 3


# -------------------------------------------------------------------------------- guards and config
def test_downstream_dataset_refused_unless_forced(tmp_path):
    write_images(tmp_path / "in", 1, 64, seed=3)
    cfg = config(tmp_path / "in", tmp_path / "out", datasets=[{"name": "bus_bra", "path": str(tmp_path / "in")}])
    with pytest.raises(DownstreamDatasetError, match="BUS-BRA"):
        run_local(cfg)
    assert not (tmp_path / "out").exists()
    report = run_local(cfg.model_copy(update={"force_downstream": True}))
    assert report["samples"] == 1
    meta = json.loads(read_samples(tmp_path / "out")[0]["json"])
    assert (meta["dataset"], meta["anatomy"]) == ("bus_bra", "Breast")  # anatomy from the registry


def test_check_leaks_reports_eval_images_in_the_build(built, tmp_path):
    root, _ = built
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    shutil.copyfile(root / "in/images/scan_0001.png", eval_dir / "case_7.png")
    write_images(eval_dir / "other", 1, 64, seed=99)
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    report = run_local(config(root / "in", out, check_leaks=[str(eval_dir)]))
    assert [(x["input"], x["index"]) for x in report["leaks"]] == [("case_7.png", 0)]
    assert report["shards"]["resumed"] == 5  # the check reads the done-markers, not the shards


def test_missing_folder_and_empty_input_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_local(config(tmp_path / "nowhere", tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no input files"):
        run_local(config(tmp_path / "empty", tmp_path / "out"))


def test_example_config_validates_and_unknown_keys_fail():
    cfg = load_build_config(REPO / "configs/build_example.yaml", ["shard_size=500", "cleaning.mode=reference"])
    assert cfg.shard_size == 500 and cfg.cleaning.mode == "reference" and len(cfg.datasets) == 3
    assert cfg.output.startswith("s3://") and cfg.dedup.near_duplicates
    with pytest.raises(ConfigError, match="shard_sise"):
        load_build_config(REPO / "configs/build_example.yaml", ["shard_sise=5"])
    with pytest.raises(ConfigError, match="kinds"):
        load_build_config(REPO / "configs/build_example.yaml", ["dedup.kinds=[gif]"])
