"""Shard builder on a real Ray: CLI in-process, S3 on moto's HTTP server, kill -9 and resume, `ray job submit`."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import ray
import webdataset as wds

from usfmae.commands import build_shards  # the entry point, run in-process against the module's Ray
from usfmae.data import s3 as s3mod
from usfmae.data.sources import resolve
from usfmae.io import printable
from usfmae.testing.s3proxy import moto_endpoint
from usfmae.shards.build import run_local
from usfmae.shards.config import BuildConfig, S3Config
from usfmae.shards.sink import S3Sink, open_sink
from usfmae.testing.corpus import write_images, write_mixed_corpus
from usfmae.testing.ray_local import private_head

from helpers import BIN, REPO, run
from hostile_corpus import restore_permissions, write_hostile_corpus

BUILD = REPO / "preprocessing/build_shards.py"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
SALT = "ray-test-salt"


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A private Ray head (2 CPUs) for this module, joined in-process; fake AWS credentials and the salt are
    in its environment so its workers and job drivers see them."""
    saved = {k: os.environ.get(k) for k in [*FAKE_AWS, "USFMAE_SOURCE_SALT"]}
    os.environ.update(FAKE_AWS, USFMAE_SOURCE_SALT=SALT)
    try:
        with private_head(tmp_path_factory.mktemp("ray")) as head:
            ray.init(address=head.gcs, _node_ip_address="127.0.0.1", log_to_driver=False)
            try:
                yield head
            finally:
                ray.shutdown()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def moto_url(local_ray):
    with moto_endpoint() as url:
        yield url


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_mixed_corpus(root, n_images=6, size=96)
    return root


def local_config(inputs: Path, output: Path, **kw) -> BuildConfig:
    return BuildConfig.model_validate({"datasets": [{"name": "mix", "path": str(inputs)}], "output": str(output),
                                       "salt": SALT, **kw})


def tar_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def test_ray_build_matches_single_process_build(local_ray, corpus, tmp_path, capsys):
    out = tmp_path / "ray"
    assert build_shards.main(["--input", str(corpus), "--dataset", "mix", "--output", str(out),
                              "--shard-size", "5"]) == 0
    progress = capsys.readouterr().out
    assert "[build] shards 5/5" in progress and "img/s" in progress and "rejects 5" in progress
    run_local(local_config(corpus, tmp_path / "plain", shard_size=5))
    assert tar_files(out) == tar_files(tmp_path / "plain") and len(tar_files(out)) == 5
    assert (out / "manifest.json").read_bytes() == (tmp_path / "plain/manifest.json").read_bytes()
    for tar in sorted(out.glob("*.tar")):  # GNU tar reads every shard
        names = run(["tar", "-tf", tar]).stdout.split()
        assert len(names) % 2 == 0 and all(n.endswith((".png", ".json")) for n in names)
    samples = list(wds.WebDataset([str(p) for p in sorted(out.glob("*.tar"))], shardshuffle=False,
                                  empty_check=False))
    assert len(samples) == 18 and all({"png", "json"} <= set(s) for s in samples)
    report = json.loads((out / "report.json").read_text())
    assert report["inputs_seen"] == 18 and len(report["rejected"]) == 5 and report["near_duplicates"] == 2


def test_cli_guards_downstream_data_and_reports_leaks(local_ray, tmp_path, capsys):
    write_images(tmp_path / "busbra", 2, 64, seed=5)
    argv = ["--input", str(tmp_path / "busbra"), "--dataset", "BUS-BRA", "--output", str(tmp_path / "out"),
            "--no-clean"]
    assert build_shards.main(argv) == 2
    assert "BUS-BRA" in capsys.readouterr().err and not (tmp_path / "out").exists()
    eval_dir = tmp_path / "busbra"  # its own images: every one of them leaks
    assert build_shards.main([*argv, "--force-downstream", "--check-leaks", str(eval_dir)]) == 3
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert sorted(x["input"] for x in report["leaks"]) == ["scan_0000.png", "scan_0001.png"]


def test_s3_output_on_moto_read_back_with_webdataset(local_ray, moto_url, tmp_path, monkeypatch):
    write_images(tmp_path / "in", 6, 64, seed=6)
    client = boto3.client("s3", endpoint_url=moto_url)
    client.create_bucket(Bucket="shards")
    argv = ["--input", str(tmp_path / "in"), "--output", "s3://shards/builds/v1", "--shard-size", "4",
            "--endpoint-url", moto_url, "--no-clean"]
    assert build_shards.main(argv) == 0
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="shards")["Contents"])
    assert keys == ["builds/v1/_parts/shard-000000.tar.json", "builds/v1/_parts/shard-000001.tar.json",
                    "builds/v1/manifest.json", "builds/v1/report.json",
                    "builds/v1/shard-000000.tar", "builds/v1/shard-000001.tar"]

    monkeypatch.setenv(s3mod.ENDPOINT_ENV, moto_url)
    s3mod.s3_client.cache_clear()  # the reader side takes its endpoint from the environment
    shards = resolve("s3://shards/builds/v1")
    assert [s.samples for s in shards] == [4, 2]
    manifest = json.loads(s3mod.read_bytes("s3://shards/builds/v1/manifest.json"))
    for shard, entry in zip(shards, manifest["shards"]):
        assert hashlib.sha256(s3mod.read_bytes(shard.url)).hexdigest() == entry["sha256"]
    s3mod.register_webdataset_s3()
    samples = list(wds.WebDataset([s.url for s in shards], shardshuffle=False, empty_check=False))
    assert len(samples) == 6 and all(json.loads(s["json"])["dataset"] == "unnamed" for s in samples)

    assert build_shards.main(argv) == 0  # a rerun finds every done-marker on S3 and skips all shards
    report = json.loads(s3mod.read_bytes("s3://shards/builds/v1/report.json"))
    assert report["shards"] == {"total": 2, "built": 0, "resumed": 2}
    s3mod.s3_client.cache_clear()


def test_s3_sink_uploads_multipart_and_leaves_no_partial_object(moto_url, tmp_path):
    client = boto3.client("s3", endpoint_url=moto_url)
    client.create_bucket(Bucket="multi")
    sink = S3Sink("s3://multi/p", S3Config(endpoint_url=moto_url, multipart_chunk_mb=5))
    big = tmp_path / "big.tar"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    sink.put_file(big, "shard-000000.tar")
    head = client.head_object(Bucket="multi", Key="p/shard-000000.tar")
    assert head["ETag"].strip('"').endswith("-3")  # three 5 MiB parts
    assert hashlib.sha256(sink.get_bytes("shard-000000.tar")).hexdigest() == digest
    assert not big.exists() and not client.list_multipart_uploads(Bucket="multi").get("Uploads")
    assert sink.size("missing.tar") is None and sink.get_bytes("missing.tar") is None
    with pytest.raises(s3mod.S3Error, match="s3://nobucket/x"):
        S3Sink("s3://nobucket/x", S3Config(endpoint_url=moto_url, attempts=1)).prepare()


def test_duplicates_across_shards_dropped_on_s3(moto_url, tmp_path):
    """The build-wide duplicate pass rewrites shards on S3 too (streamed down, uploaded whole)."""
    paths = write_images(tmp_path / "in", 3, 64, seed=9)
    (tmp_path / "in/zz").mkdir()
    (tmp_path / "in/zz/copy.png").write_bytes(paths[0].read_bytes())
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket="dedup")
    cfg = BuildConfig.model_validate({"datasets": [{"name": "d", "path": str(tmp_path / "in")}], "salt": SALT,
                                      "output": "s3://dedup/b", "shard_size": 1, "cleaning": {"enabled": False},
                                      "s3": {"endpoint_url": moto_url}})
    report = run_local(cfg)
    assert report["samples"] == 3 and [d["input"] for d in report["duplicate_samples"]] in (["zz/copy.png"],
                                                                                          ["scan_0000.png"])
    sink = open_sink("s3://dedup/b", cfg.s3)
    manifest = json.loads(sink.get_bytes("manifest.json"))
    assert sum(s["samples"] for s in manifest["shards"]) == 3
    for entry in manifest["shards"]:
        assert hashlib.sha256(sink.get_bytes(entry["name"])).hexdigest() == entry["sha256"]
    assert run_local(cfg)["shards"]["resumed"] == 4  # the rewritten shard's marker matches its new size


def test_endpoint_from_environment_is_fixed_on_the_driver(monkeypatch):
    monkeypatch.setenv(s3mod.ENDPOINT_ENV, "http://127.0.0.1:9")
    assert open_sink("s3://b/p").settings.endpoint_url == "http://127.0.0.1:9"  # workers need not have the env
    assert open_sink("s3://b/p", S3Config(endpoint_url="http://x:1")).settings.endpoint_url == "http://x:1"
    with pytest.raises(ValueError, match="s3://"):
        open_sink("s3:///no-bucket")


@pytest.mark.slow
def test_killed_build_resumes_to_identical_shards(local_ray, tmp_path):
    write_images(tmp_path / "in", 16, 96, seed=7)
    out = tmp_path / "killed"
    cmd = [sys.executable, BUILD, "--input", tmp_path / "in", "--output", out, "--shard-size", "2",
           "--ray-address", local_ray.gcs]
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while proc.poll() is None and not list((out / "_parts").glob("*.json")):
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver's own process group only
    finally:
        proc.wait(timeout=60)
    done = list((out / "_parts").glob("*.json"))
    assert proc.returncode == -signal.SIGKILL and 1 <= len(done) < 8 and not (out / "manifest.json").exists()

    assert build_shards.main(["--input", str(tmp_path / "in"), "--output", str(out), "--shard-size", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["shards"]["resumed"] >= len(done) and report["samples"] == 16
    run_local(local_config(tmp_path / "in", tmp_path / "whole", shard_size=2, datasets=[
        {"name": "unnamed", "path": str(tmp_path / "in")}]))
    assert tar_files(out) == tar_files(tmp_path / "whole") and len(tar_files(out)) == 8
    assert (out / "manifest.json").read_bytes() == (tmp_path / "whole/manifest.json").read_bytes()
    assert not list(out.glob(".*"))  # no temp file left visible or hidden


@pytest.mark.slow
def test_ray_job_submit_to_local_cluster(local_ray, corpus, tmp_path):
    cfg = tmp_path / "build.yaml"
    cfg.write_text(f"datasets:\n  - name: EchoNet-Dynamic\n    path: {corpus}\noutput: {tmp_path / 'out'}\n"
                   f"shard_size: 6\nsalt: {SALT}\ncleaning:\n  enabled: false\n")
    submit = [BIN / "ray", "job", "submit", f"--address={local_ray.jobs}", "--", BIN / "python", BUILD,
              "--config", cfg]
    for _ in range(30):  # a fresh head's job agent takes a few seconds to register
        proc = subprocess.run([str(c) for c in submit], capture_output=True, text=True, timeout=600)
        if "No available agent" not in proc.stdout + proc.stderr:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "[build] done: 18 samples" in proc.stdout
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["datasets"] == {"EchoNet-Dynamic": 18} and len(manifest["shards"]) == 4
    samples = list(wds.WebDataset([str(s.url) for s in resolve(str(tmp_path / "out"))], shardshuffle=False,
                                  empty_check=False))
    assert {json.loads(s["json"])["anatomy"] for s in samples} == {"Heart"}  # from the registry


def check_outcomes(report: dict, cases: list, count: str) -> None:
    """Every case of the hostile corpus is in `report` as promised: read (with `count` frames/samples, or
    all its samples named as exact duplicates), rejected or skipped with a matching reason."""
    read = {r["input"]: r for r in report["read"]}
    rejected = {r["input"]: r["reason"] for r in report["rejected"]}
    skipped = {r["path"]: r["reason"] for r in report["skipped"]}
    duplicated = {d["input"] for d in report.get("duplicate_samples", [])}
    assert report["inputs_seen"] == len(read) + len(rejected)
    wrong = []
    for case in cases:
        rel = printable(case.rel, None)
        if case.expect == "read":
            entry = read.get(rel)
            ok = entry is not None and (case.frames is None or entry["frames"] == case.frames) and (
                entry[count] >= 1 or rel in duplicated)
        else:
            reason = (rejected if case.expect == "reject" else skipped).get(rel)
            ok = reason is not None and re.search(case.reason, reason) is not None
        if not ok:
            wrong.append(f"{case.rel!r}: expected {case.expect}, read {read.get(rel)}, rejected {rejected.get(rel)}, "
                         f"skipped {skipped.get(rel)}")
    assert not wrong, "\n".join(wrong)
    assert len(read) == sum(c.expect == "read" for c in cases) and len(rejected) == sum(c.expect == "reject" for c in cases)


@pytest.mark.slow
def test_hostile_folder_end_to_end(local_ray, tmp_path, capsys):
    """Issue 16, done when: both tools exit 0 on a folder mixing every hostile case with good scans, every good
    scan reaches the shards (or is named as an exact duplicate of one that did), every other case is rejected
    or skipped with its reason, and a rerun of the Ray build changes nothing."""
    root = tmp_path / "in"
    cases = write_hostile_corpus(root)
    try:
        out = tmp_path / "shards"
        argv = ["--input", str(root), "--output", str(out), "--shard-size", "10"]
        assert build_shards.main(argv) == 0
        report = json.loads((out / "report.json").read_text())
        check_outcomes(report, cases, "samples")
        assert report["shards"]["built"] == len(tar_files(out)) > 5
        shards = resolve(str(out))
        samples = list(wds.WebDataset([s.url for s in shards], shardshuffle=False, empty_check=False))
        keys = [s["__key__"] for s in samples]
        assert len(keys) == len(set(keys)) == report["samples"] == sum(s.samples for s in shards)
        before = tar_files(out)
        assert build_shards.main(argv) == 0  # resumed: every shard skipped, the duplicate pass a no-op
        assert tar_files(out) == before
        assert json.loads((out / "report.json").read_text())["shards"]["resumed"] == len(before)

        qa = tmp_path / "qa"
        proc = run([sys.executable, REPO / "preprocessing/clean_images.py", "--input", root, "--output", qa],
                   timeout=1800)
        assert "rejected" in proc.stdout
        check_outcomes(json.loads((qa / "report.json").read_text()), cases, "frames")
        assert (qa / "report.json~/00000.clean.png").is_file()
    finally:
        restore_permissions(root)
