"""Checkpoint writes in one CPU rank: gathered in buckets, written in the background, saved by the clock, and
the run directory's disk full or read-only at a checkpoint (the run stops naming the path; the previous
checkpoint stays valid and is what the next run resumes from)."""

import json
import subprocess
import threading

import pytest

from usfmae.checkpoint import read_run_checkpoint
from usfmae.train import fullstate
from usfmae.train.checkpointing import BackgroundWriter, CheckpointWriteError
from usfmae.train.fullstate import digest

from test_engine_hotpath import records, trainer

SHORT = ("schedule.max_steps=4", "checkpoint.every_steps=2", "logging.every_steps=1")


def test_background_writer_runs_jobs_in_order_and_raises_a_failure_once():
    writer, done, gate = BackgroundWriter(), [], threading.Event()
    writer.submit("first", lambda: gate.wait(10) and done.append(1))
    writer.submit("writing s3://b/run/checkpoints/step2", lambda: open("/nonexistent/dir/x", "w"))
    writer.submit("third", lambda: done.append(3))  # after a failure nothing more is written
    gate.set()
    with pytest.raises(CheckpointWriteError, match=r"writing s3://b/run/checkpoints/step2 failed: FileNotFoundError"):
        writer.wait()
    assert done == [1]
    writer.wait()  # reported once
    writer.submit("again", lambda: done.append(4))
    writer.wait()
    assert done == [1, 4]


def test_gather_in_buckets_matches_one_tensor_at_a_time(tmp_path, process_group, monkeypatch):
    t = trainer(tmp_path, "deepspeed.zero_stage=2", "schedule.max_steps=2", "checkpoint.every_steps=100")
    t.train()
    whole = digest(t.state_io.gather())
    monkeypatch.setattr(fullstate, "BUCKET_NUMEL", 1000)  # many buckets, and tensors larger than one
    assert len(t.state_io._buckets()) > 10
    assert digest(t.state_io.gather()) == whole


def test_every_minutes_saves_at_logging_steps_by_rank_0s_clock(tmp_path, process_group):
    t = trainer(tmp_path, "schedule.max_steps=5", "checkpoint.every_steps=100", "checkpoint.keep_last=10",
                "checkpoint.every_minutes=0.000001", "logging.every_steps=2")
    t.train()
    assert sorted(d.name for d in (t.run_dir / "checkpoints").iterdir() if d.is_dir()) == \
        ["step00000002", "step00000004", "step00000005"]  # logging steps 2, 4, and the end


@pytest.fixture
def small_disk(tmp_path):
    """run/checkpoints on a 10 MiB tmpfs: one tiny-model checkpoint (7 MiB) fits, a second does not."""
    target = tmp_path / "run" / "checkpoints"
    target.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(target)], capture_output=True,
                           text=True)
    if mount.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {mount.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def test_disk_full_or_read_only_at_a_checkpoint_stops_the_run_and_keeps_the_previous(tmp_path, process_group,
                                                                                      small_disk):
    trainer(tmp_path, *SHORT, "schedule.stop_at_step=2").train()
    assert (small_disk / "latest").read_text() == "step00000002"

    for remount, error in ((None, "No space left on device"), ("remount,ro", "Read-only file system")):
        if remount:
            subprocess.run(["mount", "-o", remount, str(small_disk)], check=True)
        t = trainer(tmp_path, *SHORT)
        with pytest.raises(CheckpointWriteError) as stop:
            t.train()
        message = str(stop.value)
        assert f"writing checkpoint {small_disk}/step00000004 failed" in message and error in message
        assert f"the previous checkpoint ({small_disk}/step00000002) stays valid" in message
        assert (small_disk / "latest").read_text() == "step00000002"
        assert sorted(p.name for p in small_disk.iterdir()) == ["latest", "step00000002"]  # no leftover
        read_run_checkpoint(small_disk / "step00000002")  # complete and readable

    subprocess.run(["mount", "-o", "remount,rw,size=32m", str(small_disk)], check=True)
    t = trainer(tmp_path, *SHORT)
    t.train()
    resumed = [r for r in records(t) if r.get("event") == "resume"]
    assert [r["step"] for r in resumed] == [2, 2, 2]  # each attempt, and the last one, from step 2
    assert (small_disk / "latest").read_text() == "step00000004"
    assert json.loads((small_disk / "step00000004" / "state.json").read_text())["step"] == 4
