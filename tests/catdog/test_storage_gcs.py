"""catdog.storage (local and gs://) and gs:// ingest, against gcp-storage-emulator on 127.0.0.1."""

from __future__ import annotations

import pytest

from catdog import storage
from catdog.ingest import IngestError, build_report, class_counts, ingest_dataset
from tests.helpers import IMAGES_PER_CLASS, make_source_with_splits, zip_folder


def test_split_gcs_and_join():
    assert storage.split_gcs("gs://bucket/a/b.txt") == ("bucket", "a/b.txt")
    assert storage.split_gcs("gs://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="without a bucket"):
        storage.split_gcs("gs:///x")
    with pytest.raises(ValueError, match="not a gs:// URI"):
        storage.split_gcs("/local/path")
    assert storage.join("gs://b/p/", "/x/", "y") == "gs://b/p/x/y"
    assert storage.join("/tmp/a", "b") == "/tmp/a/b"
    assert storage.is_gcs("gs://b") and not storage.is_gcs("/gs://")


def test_local_round_trip(tmp_path):
    target = tmp_path / "deep" / "file.txt"
    storage.write_text(str(target), "héllo")
    assert storage.read_text(str(target)) == "héllo"
    assert storage.exists(str(target)) and not storage.exists(str(tmp_path / "nope"))
    assert [p for p in target.parent.iterdir()] == [target]  # no temporary file left behind
    storage.upload_tree(tmp_path / "deep", str(tmp_path / "copy"))
    assert storage.list_files(str(tmp_path / "copy")) == [str(tmp_path / "copy" / "file.txt")]
    storage.download_tree(str(tmp_path / "copy"), tmp_path / "back")
    assert (tmp_path / "back" / "file.txt").read_text() == "héllo"


def test_gcs_client_uses_emulator(gcs):
    """Objects written through catdog.storage are visible through the emulator's own JSON API."""
    import json
    import urllib.parse
    import urllib.request

    assert storage.gcs_client() is storage.gcs_client()  # one cached client
    storage.write_bytes(gcs.uri("probe.txt"), b"x")
    name = urllib.parse.quote(gcs.uri("probe.txt").split("/", 3)[3], safe="")
    with urllib.request.urlopen(f"{gcs.host}/storage/v1/b/{gcs.bucket}/o/{name}", timeout=10) as response:
        assert json.load(response)["size"] == "1"


def test_gcs_round_trip(gcs):
    uri = gcs.uri("dir", "obj.bin")
    payload = bytes(range(256)) * 40
    assert not storage.exists(uri)
    storage.write_bytes(uri, payload)
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == payload
    storage.write_text(gcs.uri("dir", "sub", "note.txt"), "hi")
    assert storage.read_text(gcs.uri("dir", "sub", "note.txt")) == "hi"
    assert storage.list_files(gcs.uri("dir")) == [gcs.uri("dir", "obj.bin"), gcs.uri("dir", "sub", "note.txt")]
    assert storage.list_files(gcs.uri("di")) == []  # a prefix is a folder, not a string prefix


def test_gcs_tree_round_trip(gcs, image_folder, tmp_path):
    storage.upload_tree(image_folder, gcs.uri("pets"))
    files = storage.list_files(gcs.uri("pets"))
    assert len(files) == 2 * IMAGES_PER_CLASS
    assert gcs.uri("pets", "cat", "cat_000.jpg") in files
    local = storage.download_tree(gcs.uri("pets"), tmp_path / "down")
    for path in image_folder.rglob("*.jpg"):
        assert (local / path.relative_to(image_folder)).read_bytes() == path.read_bytes()


def test_gcs_prefix_ingest(gcs, image_folder, tmp_path):
    (image_folder / "dog" / "broken.jpg").write_bytes(b"not an image")
    storage.upload_tree(image_folder, gcs.uri("data"))
    result = ingest_dataset(gcs.uri("data"), tmp_path / "out", cache_dir=tmp_path / "cache")
    assert result.layout == "class_folders"
    assert class_counts(result) == {"cat": IMAGES_PER_CLASS, "dog": IMAGES_PER_CLASS}
    assert [(s.source, "not a decodable image" in s.reason) for s in result.skipped] == [("dog/broken.jpg", True)]
    local = ingest_dataset(str(image_folder), tmp_path / "local", cache_dir=tmp_path / "cache")
    assert result.fingerprint == local.fingerprint


def test_gcs_prefix_with_trailing_slash_and_wrapper(gcs, tmp_path):
    base = make_source_with_splits(tmp_path / "src", train=3, validation=2)
    storage.upload_tree(base.parent, gcs.uri("nested"))
    result = ingest_dataset(gcs.uri("nested") + "/", tmp_path / "out", cache_dir=tmp_path / "cache")
    assert result.layout == "train_validation"
    assert build_report(result, "x")["class_counts_by_source_split"] == {
        "train": {"cats": 3, "dogs": 3}, "validation": {"cats": 2, "dogs": 2},
    }


def test_gcs_empty_prefix_fails(gcs, tmp_path):
    with pytest.raises(IngestError, match="no objects under"):
        ingest_dataset(gcs.uri("nothing-here"), tmp_path / "out", cache_dir=tmp_path / "cache")


def test_gcs_archive_ingest_downloaded_once(gcs, tmp_path, monkeypatch):
    archive = zip_folder(make_source_with_splits(tmp_path / "src", train=4, validation=2), tmp_path / "d.zip")
    uri = gcs.uri("archives", "cats_and_dogs_filtered.zip")
    storage.write_bytes(uri, archive.read_bytes())
    first = ingest_dataset(uri, tmp_path / "first", cache_dir=tmp_path / "cache")
    assert first.layout == "train_validation"
    assert class_counts(first) == {"cats": 6, "dogs": 6}
    downloads = list((tmp_path / "cache" / "downloads").iterdir())
    assert len(downloads) == 1 and downloads[0].read_bytes() == archive.read_bytes()

    def no_download(uri):
        raise AssertionError(f"downloaded {uri} again")

    monkeypatch.setattr(storage, "read_bytes", no_download)
    assert ingest_dataset(uri, tmp_path / "second", cache_dir=tmp_path / "cache").fingerprint == first.fingerprint


def test_gcs_missing_archive_fails_clearly(gcs, tmp_path):
    uri = gcs.uri("archives", "missing.zip")
    with pytest.raises(IngestError, match="missing.zip"):
        ingest_dataset(uri, tmp_path / "out", cache_dir=tmp_path / "cache")


def test_suspects_and_overrides_on_gcs(gcs, image_folder, tmp_path):
    """A gs:// registry holds a run's suspects and their photos (catdog.suspects), and a gs:// feedback
    prefix the label overrides that ingest applies (catdog.label_overrides)."""
    import hashlib
    import json

    from catdog.label_overrides import write_overrides
    from catdog.registry import ModelRegistry
    from catdog.suspects import photo_uri, read_suspects, record_suspects, suspects_of_champion

    cat = sorted((image_folder / "cat").iterdir())[0]
    sha = hashlib.sha256(cat.read_bytes()).hexdigest()
    registry = ModelRegistry(gcs.uri("registry"))
    entry = {"sha256": sha, "source": f"cat/{cat.name}", "file": f"cat/{cat.name}", "given_label": "cat",
             "reasons": ["label"], "duplicates": [], "probabilities": {"cat": 0.1, "dog": 0.9}}
    uri = record_suspects(registry, 4, [entry], image_folder, "run-9", ["cat", "dog"])
    assert uri == gcs.uri("registry", "suspects", "v4", "suspects.json")
    storage.write_text(registry.alias_uri, json.dumps({"version": 4, "suspects_uri": uri}))
    assert suspects_of_champion(registry.uri)[1] == uri
    [recorded] = read_suspects(uri)["suspects"]
    assert storage.read_bytes(photo_uri(uri, recorded)) == cat.read_bytes()

    write_overrides(gcs.uri("feedback"), [{"sha256": sha, "source": entry["source"], "given_label": "cat",
                                          "label": "dog", "reviewers": [], "flagged_by_run": "run-9",
                                          "updated_at": None}])
    result = ingest_dataset(str(image_folder), tmp_path / "out", cache_dir=tmp_path / "cache",
                            feedback_uri=gcs.uri("feedback"), workers=1)
    assert {r.sha256: r.label for r in result.images}[sha] == "dog" and result.overrides["relabelled"] == 1
