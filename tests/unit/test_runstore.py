"""usfmae.runstore: one run directory interface, a local folder or S3 (moto's real HTTP server)."""

import os

import boto3
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from usfmae.checkpoint import CheckpointNotFound, fetch_checkpoint, read_run_checkpoint, stage_run_checkpoint
from usfmae.ports import free_port
from usfmae.testing.s3proxy import moto_endpoint
from usfmae.runstore import RunStore
from usfmae.shards.config import S3Config

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto_url():
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    with moto_endpoint() as url:
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="runs")
        yield url
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return RunStore(tmp_path / "run")
    url = request.getfixturevalue("moto_url")
    return RunStore(f"s3://runs/{tmp_path.name}", tmp_path / "scratch", S3Config(endpoint_url=url, attempts=1))


def save(store: RunStore, step: int) -> str:
    tag = f"step{step:08d}"
    stage_run_checkpoint(store.checkpoint_staging(tag), {"w": torch.full((3,), float(step))},
                         {"exp_avg": {"w": torch.zeros(3)}}, {"step": step}, {"preset": "x"})
    return store.publish_checkpoint(tag)


def test_checkpoints_are_published_whole_then_named_and_pruned(store):
    assert store.latest_checkpoint() == (None, [])
    for step in (2, 4, 6):
        assert save(store, step) == store.where(f"checkpoints/step{step:08d}")
    # a save killed half-way: staged files, and on S3 a tag without its state.json; never named by `latest`
    store.checkpoint_staging("step00000008").mkdir(parents=True)
    if store.remote:
        store.sink.put_bytes(b"half", "checkpoints/step00000008/model.safetensors")
    assert store.latest_checkpoint() == ("step00000006", [])
    store.prune_checkpoints(2)
    names = store.sink.list_tree("checkpoints")
    tags = sorted({n.split("/")[1] for n in names if n.count("/") == 2})
    assert tags == ["step00000004", "step00000006"]
    assert not store.checkpoint_staging("step00000008").exists()
    path = store.fetch_checkpoint("step00000006")
    state, weights, _ = read_run_checkpoint(path)
    assert state == {"step": 6} and torch.equal(weights["w"], torch.full((3,), 6.0))
    store.drop_fetched(path)
    assert path.exists() != store.remote  # downloads into scratch are dropped; the local run dir stays
    store.sink.delete("checkpoints/step00000006/state.json")
    assert store.latest_checkpoint() == ("step00000006", ["state.json"])


def test_logs_are_appended_locally_and_uploaded_as_snapshots(store, tmp_path):
    log = store.local("metrics.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("a\n")
    upload = store.snapshot(["metrics.jsonl", "tensorboard"])  # no tensorboard folder: nothing to upload
    log.write_text("a\nb\n")  # appended after the snapshot
    upload()
    assert store.read_text("metrics.jsonl") == ("a\n" if store.remote else "a\nb\n")
    if store.remote:  # another node (fresh scratch) goes on from the uploaded log
        other = RunStore(store.url, tmp_path / "other", store.sink.settings)
        other.restore("metrics.jsonl")
        assert other.local("metrics.jsonl").read_text() == "a\n"
        other.local("images").mkdir()
        (other.local("images") / "g.png").write_bytes(b"png")
        other.publish("images")
        assert store.sink.get_bytes("images/g.png") == b"png" and not (other.local("images") / "g.png").exists()


def test_fetch_checkpoint_reads_weights_and_run_checkpoints_from_s3(moto_url, tmp_path, monkeypatch):
    store = RunStore("s3://runs/ft", tmp_path / "scratch", S3Config(endpoint_url=moto_url))
    save(store, 3)
    store.sink.put_file(_file(tmp_path / "m.pt", {"w": torch.ones(2)}), "weights/m.pt")
    for ref, step in (("s3://runs/ft", 3), ("s3://runs/ft/checkpoints", 3), ("s3://runs/ft/checkpoints/step00000003", 3)):
        local = fetch_checkpoint(ref, moto_url)
        assert local.name == "model.safetensors" and load_file(local)["w"][0] == step
    assert torch.load(fetch_checkpoint("s3://runs/ft/weights/m.pt", moto_url))["w"].sum() == 2
    with pytest.raises(CheckpointNotFound, match="s3://runs/ft/nothing"):
        fetch_checkpoint("s3://runs/ft/nothing", moto_url)


def _file(path, tensors):
    torch.save(tensors, path)
    return path


def _check_rank(rank: int, port: int, good: str, bad: str, out):
    import torch.distributed as dist

    from usfmae.train.rundir import RunDirError, check_shared_run_dir

    os.environ.update(CREDENTIALS)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        check_shared_run_dir(RunStore("s3://runs/guard", None, S3Config(endpoint_url=good if rank == 0 else bad,
                                                                         attempts=1)), rank)
        out.put((rank, "ok"))
    except RunDirError as e:
        out.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


def test_s3_run_directory_guard_names_the_rank_that_cannot_reach_the_bucket(moto_url):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port, closed = free_port(), free_port()  # nothing listens on `closed`
    procs = [ctx.Process(target=_check_rank, args=(r, port, moto_url, f"http://127.0.0.1:{closed}", out))
             for r in (0, 1)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
    for rank in (0, 1):  # both ranks stop with the same message
        assert "the run directory s3://runs/guard is not reachable from all ranks: rank 1 on" in results[rank]
        assert "same S3 endpoint" in results[rank] and "rank 0" not in results[rank].split("ranks:")[1]
