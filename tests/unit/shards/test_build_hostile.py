"""The shard builder with hostile inputs (issue 16), without Ray: a failing input never fails its shard,
exact duplicates are handled build-wide, stale tars are removed, the report accounts for every input,
the shard reader needs a complete manifest, and a shard task's memory stays bounded on every bomb."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from usfmae.data.sources import resolve
from usfmae.io import dispatch
from usfmae.shards import assemble
from usfmae.shards.build import prepare_build, run_local
from usfmae.shards.config import BuildConfig
from usfmae.shards.sink import LocalSink
from usfmae.shards.writer import ShardError, write_shard
from usfmae.testing.corpus import write_images, write_mixed_corpus

from helpers import REPO
from hostile_corpus import png_bytes, restore_permissions, scan_image, write_hostile_corpus


def config(inputs: Path, output: Path, **kw) -> BuildConfig:
    base = {"datasets": [{"name": "mix", "path": str(inputs)}], "output": str(output), "salt": "test-salt",
            "shard_size": 5, "cleaning": {"enabled": False}}
    return BuildConfig.model_validate({**base, **kw})


def tars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def tar_keys(out: Path) -> list[str]:
    keys = []
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tf:
            keys += sorted({m.name.split(".")[0] for m in tf.getmembers()})
    return keys


# ------------------------------------------------------------------------------------ failing inputs
def test_any_exception_in_one_input_rejects_only_that_input(tmp_path, monkeypatch):
    write_images(tmp_path / "in", 4, 64, seed=1)
    real_reader, real_clean = dispatch.READERS["image"], assemble.clean_image

    def reader(path, cfg, root=None):
        if path.name == "scan_0001.png":
            raise TypeError("'NoneType' object is not subscriptable")  # a reader bug nobody foresaw
        return real_reader(path, cfg, root)

    def clean(image, cfg, source=""):
        if "scan_0002.png" in source:
            raise RuntimeError("tesseract crashed")
        return real_clean(image, cfg, source)

    monkeypatch.setitem(dispatch.READERS, "image", reader)
    monkeypatch.setattr(assemble, "clean_image", clean)
    monkeypatch.setattr(assemble, "clean_images", lambda images, cfg, sources: (_ for _ in ()).throw(ValueError()))
    report = run_local(config(tmp_path / "in", tmp_path / "out", shard_size=100, cleaning={"enabled": True}))
    reasons = {r["input"]: r["reason"] for r in report["rejected"]}
    assert reasons == {
        "scan_0001.png": "could not be read as an image: the file is malformed in a way the reader does not handle "
                         "(TypeError)",
        "scan_0002.png": "cleaning failed on frame 0 (tesseract crashed)"}
    assert sorted((r["input"], r["samples"]) for r in report["read"]) == [("scan_0000.png", 1), ("scan_0003.png", 1)]


class BrokenSink(LocalSink):
    def put_file(self, local, name):
        raise OSError(28, "No space left on device")


def test_a_failed_shard_names_the_inputs_it_held(tmp_path):
    write_images(tmp_path / "in", 3, 64, seed=2)
    plan = prepare_build(config(tmp_path / "in", tmp_path / "out", shard_size=100))
    with pytest.raises(ShardError, match=r"shard shard-000000\.tar failed \(OSError: No space left on device\); its 3 "
                                         r"input\(s\): scan_000\d\.png, scan_000\d\.png, scan_000\d\.png"):
        write_shard(plan.specs[0], plan.settings, BrokenSink(str(tmp_path / "out")))


# ------------------------------------------------------------------------------- report accounting
def test_report_accounts_for_every_input(tmp_path):
    write_mixed_corpus(tmp_path / "in", n_images=3, size=96)
    (tmp_path / "in/.DS_Store").write_bytes(b"x")
    report = run_local(config(tmp_path / "in", tmp_path / "out"))
    assert report["inputs_seen"] == len(report["read"]) + len(report["rejected"]) == 15
    assert sum(r["samples"] for r in report["read"]) == report["samples"] == 15
    assert report["skipped"] == [{"dataset": "mix", "path": ".DS_Store",
                                  "reason": "hidden file: not read (name starts with '.')"}]
    loop = next(r for r in report["read"] if r["input"] == "video/loop.avi")
    assert loop == {"dataset": "mix", "input": "video/loop.avi", "samples": 2, "frames": 3, "near_duplicates": 1}


# ---------------------------------------------------------------------------- build-wide duplicates
@pytest.fixture
def duplicated(tmp_path):
    """6 distinct scans and three copies of another one, in folders spread over the plan."""
    write_images(tmp_path / "in", 6, 64, seed=3)
    copy = png_bytes(scan_image(77))
    for rel in ("a/copy.png", "m/copy.png", "z/copy.png"):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / rel).write_bytes(copy)
    return tmp_path / "in"


def test_exact_duplicates_are_dropped_wherever_they_land(duplicated, tmp_path):
    one_per_shard = run_local(config(duplicated, tmp_path / "small", shard_size=1))  # copies in 3 shards
    one_shard = run_local(config(duplicated, tmp_path / "big", shard_size=100))  # copies in 1 shard
    for out, report in ((tmp_path / "small", one_per_shard), (tmp_path / "big", one_shard)):
        assert report["samples"] == 7 and report["duplicates"] == 2
        named = report["duplicate_samples"]
        assert len(named) == 2 and {d["input"] for d in named} | {named[0]["duplicate_of"]["input"]} == \
            {"a/copy.png", "m/copy.png", "z/copy.png"}
        assert sorted(tar_keys(out)) == sorted(set(tar_keys(out))) and len(tar_keys(out)) == 7
        manifest = json.loads((out / "manifest.json").read_text())
        for entry in manifest["shards"]:
            data = (out / entry["name"]).read_bytes()
            assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
        assert sum(s.samples for s in resolve(str(out))) == 7
    assert sorted(tar_keys(tmp_path / "small")) == sorted(tar_keys(tmp_path / "big"))


def test_duplicate_pass_resumes_to_identical_bytes(duplicated, tmp_path):
    out = tmp_path / "out"
    run_local(config(duplicated, out, shard_size=1))
    reference, manifest = tars(out), (out / "manifest.json").read_bytes()
    report = run_local(config(duplicated, out, shard_size=1))  # a rerun: nothing to do, nothing changes
    assert report["shards"]["resumed"] == 9 and tars(out) == reference
    filtered = [json.loads(p.read_text()) for p in sorted((out / "_parts").glob("*.json"))]
    filtered = [m["name"] for m in filtered if m["dropped"]]
    assert len(filtered) == 2
    (out / "_parts" / f"{filtered[0]}.json").unlink()  # killed after rewriting the tar, before its marker
    report = run_local(config(duplicated, out, shard_size=1))
    assert report["shards"]["built"] == 1 and report["duplicates"] == 2
    assert tars(out) == reference and (out / "manifest.json").read_bytes() == manifest


# -------------------------------------------------------------------------------- stale shards, reader
def test_rebuild_after_inputs_shrank_removes_stale_shards(tmp_path):
    write_images(tmp_path / "in", 6, 64, seed=4)
    out = tmp_path / "out"
    run_local(config(tmp_path / "in", out, shard_size=1))
    assert len(tars(out)) == 6
    for path in sorted((tmp_path / "in").glob("*.png"))[3:]:
        path.unlink()
    (out / "other-000000.tar").write_bytes((out / "shard-000000.tar").read_bytes())  # not ours: left, reported
    report = run_local(config(tmp_path / "in", out, shard_size=1))
    assert report["stale_shards"] == {"removed": ["shard-000003.tar", "shard-000004.tar", "shard-000005.tar"],
                                      "left": ["other-000000.tar"]}
    assert sorted(tars(out)) == ["other-000000.tar", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(p.name for p in (out / "_parts").glob("*.json")) == [f"shard-00000{i}.tar.json" for i in range(3)]
    assert [Path(s.url).name for s in resolve(str(out))] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]


def test_reader_needs_a_complete_manifest(tmp_path):
    write_images(tmp_path / "in", 3, 64, seed=5)
    out = tmp_path / "out"
    run_local(config(tmp_path / "in", out, shard_size=1))
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").unlink()  # a failed build: finished tars, no manifest
    with pytest.raises(ValueError, match=r"has no manifest\.json: the build that wrote it did not finish"):
        resolve(str(out))
    assert len(resolve(str(out), require_manifest=False)) == 3 and len(resolve(f"{out}/*.tar")) == 3
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "shard-000002.tar").unlink()
    with pytest.raises(ValueError, match=r"lists 1 shard\(s\) that are not there"):
        resolve(str(out))
    manifest["shards"][0]["name"] = "../../elsewhere/x.tar"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"shard entry 0 has no plain file name"):
        resolve(str(out))


# ----------------------------------------------------------------------------------- task memory
TASK_PEAK_SCRIPT = """
import resource, sys
from usfmae.shards.build import prepare_build
from usfmae.shards.config import BuildConfig
from usfmae.shards.writer import write_shard
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def build(folder, out):
    plan = prepare_build(BuildConfig.model_validate({"datasets": [{"name": "x", "path": folder}], "output": out,
                                                     "salt": "s", "shard_size": 1000}))
    return [write_shard(spec, plan.settings, plan.sink) for spec in plan.specs]
build(sys.argv[1], sys.argv[3] + "/warm")  # libraries loaded, one scan read and cleaned
base = peak()
results = build(sys.argv[2], sys.argv[3] + "/bombs")
print(base, peak(), sum(len(r.rejects) for r in results), sum(r.samples for r in results))
"""


def test_shard_task_memory_stays_bounded_on_every_bomb(tmp_path):
    """A shard task (write_shard: read, clean, encode) over all the bombs of the issue, in a subprocess: its
    peak resident memory grows by far less than its reservation (task.memory_mb, 2048 MiB)."""
    write_hostile_corpus(tmp_path / "corpus")
    restore_permissions(tmp_path / "corpus")
    (tmp_path / "warm").mkdir()
    shutil.copyfile(tmp_path / "corpus/good/scan_0.png", tmp_path / "warm/scan.png")
    proc = subprocess.run([sys.executable, "-c", TASK_PEAK_SCRIPT, tmp_path / "warm", tmp_path / "corpus/bomb",
                           tmp_path / "out"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    base, peak, rejected, samples = proc.stdout.split()
    assert int(rejected) == 9 and int(samples) == 1  # overlong.mha is read (its inflation stops at 4 KiB)
    assert float(peak) - float(base) < 256
