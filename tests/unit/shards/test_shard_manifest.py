"""usfmae.shards.manifest: the one model of manifest.json (builder, reader, test and benchmark writers)."""

import json

import pytest

from usfmae.data.sources import read_manifest, resolve
from usfmae.shards.manifest import FORMAT, MANIFEST_NAME, ShardManifest

from shardutil import make_shards


def test_the_test_writer_and_the_reader_agree(tmp_path):
    out = make_shards(tmp_path / "s", [3, 2])
    manifest = read_manifest(str(out / MANIFEST_NAME))
    assert manifest.format == FORMAT and manifest.total_samples == 5
    assert [(s.name, s.samples) for s in manifest.shards] == [("shard-000000.tar", 3), ("shard-000001.tar", 2)]
    assert [s.samples for s in resolve(str(out))] == [3, 2]


def test_extra_keys_are_kept_and_unset_fields_left_out():
    entries = [{"name": "a.tar", "samples": 1, "bytes": 10, "sha256": "00"}]
    data = ShardManifest.build(entries, image_size=64, storage="gray").to_dict()
    assert data == {"format": FORMAT, "image_size": 64, "total_samples": 1, "shards": entries, "storage": "gray"}
    assert ShardManifest.parse(json.loads(json.dumps(data)), "m.json").to_dict() == data


@pytest.mark.parametrize("data, message", [
    ({"format": "other/1", "shards": []}, "unknown manifest format 'other/1'"),
    ({"shards": [{"name": "a/b.tar", "samples": 1}]}, "shard entry 0 has no plain file name"),
    ({"shards": [{"name": "a.tar", "samples": True}]}, "shard a.tar has no valid sample count"),
    ({"shards": [{"name": "a.tar", "samples": -1}]}, "shard a.tar has no valid sample count"),
    ({"total_samples": 3}, "m.json is not a usfmae shard manifest"),
    ([], "m.json is not a usfmae shard manifest"),
])
def test_bad_manifests_are_refused_naming_the_file_and_the_problem(data, message):
    with pytest.raises(ValueError, match=message) as err:
        ShardManifest.parse(data, "m.json")
    assert "m.json" in str(err.value)
