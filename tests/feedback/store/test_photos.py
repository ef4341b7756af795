"""Photos: checked by content, stored content-addressed (local folder and gs://, on the GCS
emulator), published into class folders; zips of class folders; nothing lost when the storage
fails or the process dies between the database write and the file write."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import pytest

from catdog import storage
from feedback.labelling.inputs import UploadReport
from feedback.labelling.uploads import pair_labels, read_zip
from feedback.store.photos import PhotoRejected, PhotoStore, check_photo
from tests.feedback_fixtures import FakePredictor, feedback_settings, photo, started_service
from tests.helpers import image_bytes, png_header_only
from tests.model_fixtures import FailAfter

LABELS = ("cat", "dog")
LIMIT = 1_000_000


def check(data: bytes, max_bytes: int = LIMIT):
    return check_photo(data, max_bytes, min_side=32, max_pixels=10_000_000)


@pytest.mark.parametrize("data, status, reason", [
    (b"", 422, "empty file"),
    (b"just some text, no image", 422, "not a decodable image"),
    (image_bytes("JPEG", (64, 48))[:-400], 422, "corrupt or truncated"),
    (image_bytes("PNG", (20, 20)), 422, "too small"),
    (png_header_only(40_000, 40_000), 422, "decompression bomb"),
    (image_bytes("TIFF", (64, 48)), 422, "unsupported image format TIFF"),
])
def test_bad_photos_are_rejected_with_the_reason(data, status, reason):
    with pytest.raises(PhotoRejected, match=reason) as error:
        check(data)
    assert error.value.status == status


def test_an_oversized_photo_is_413():
    with pytest.raises(PhotoRejected, match="over the limit of 1,000 bytes") as error:
        check(image_bytes("PNG", (200, 200)), max_bytes=1000)
    assert error.value.status == 413


@pytest.mark.parametrize("fmt, extension", [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("GIF", ".gif")])
def test_the_format_comes_from_the_content(fmt, extension):
    checked = check(image_bytes(fmt, (64, 48)))
    assert (checked.header.format, checked.extension) == (fmt, extension)
    assert checked.sha256 == hashlib.sha256(checked.data).hexdigest()


@pytest.fixture(params=["local", "gcs"])
def photo_store(request, tmp_path) -> PhotoStore:
    root = str(tmp_path / "feedback") if request.param == "local" else request.getfixturevalue("gcs").uri("feedback")
    return PhotoStore(root, LABELS)


def test_originals_are_stored_once_under_their_hash(photo_store):
    checked = check(photo(1))
    uri = photo_store.save(checked)
    assert uri == storage.join(photo_store.root, "photos", checked.sha256[:2], f"{checked.sha256}.jpg")
    assert photo_store.save(checked) == uri and storage.read_bytes(uri) == checked.data
    assert storage.list_files(storage.join(photo_store.root, "photos")) == [uri]


def test_publishing_moves_a_photo_between_class_folders(photo_store):
    checked = check(photo(2))
    uri = photo_store.save(checked)
    photo_store.publish(checked.sha256, ".jpg", uri, "cat")
    assert photo_store.dataset_files() == {"cat": [f"{checked.sha256}.jpg"], "dog": []}
    photo_store.publish(checked.sha256, ".jpg", uri, "dog")
    assert photo_store.dataset_files() == {"cat": [], "dog": [f"{checked.sha256}.jpg"]}
    assert storage.read_bytes(photo_store.dataset_uri("dog", checked.sha256, ".jpg")) == checked.data
    assert storage.exists(uri)  # the original stays
    with pytest.raises(ValueError, match="unknown label 'bird'"):
        photo_store.publish(checked.sha256, ".jpg", uri, "bird")


def test_the_service_publishes_dataset_and_manifest_on_gcs(tmp_path, gcs):
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", feedback_uri=gcs.uri("fb"))
    try:
        prediction = service.predict(photo(3), original_name="x.jpg")
        service.validate(prediction.id, "dog", by="ana")
        sha = prediction.photo_sha256
        assert service.publisher.flush_manifest()  # what the maintenance thread does within a second of a change
        assert storage.list_files(gcs.uri("fb", "dataset")) == [gcs.uri("fb", "dataset", "dog", f"{sha}.jpg"),
                                                                 gcs.uri("fb", "dataset", "manifest.json")]
        (entry,) = json.loads(storage.read_text(gcs.uri("fb", "dataset", "manifest.json")))["photos"]
        assert entry["file"] == f"dog/{sha}.jpg" and entry["validated_by"] == "ana"
        assert entry["prediction_id"] == prediction.id and entry["predicted_label"] == "cat"
    finally:
        service.close()


def _store_root(service) -> Path:
    return Path(service.settings.feedback_uri)


def test_a_storage_failure_after_the_verdict_is_repaired_on_the_next_start(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    service = started_service(tmp_path, url)
    prediction = service.predict(photo(4))
    monkeypatch.setattr(storage, "copy", FailAfter(storage.copy, 0))  # the disk is full
    verdict = service.validate(prediction.id, "dog")  # the verdict is committed all the same
    assert verdict.photo.label == "dog" and service.counts()["unpublished"] == 1
    assert service.photos.dataset_files() == {"cat": [], "dog": []}
    service.close()
    monkeypatch.undo()
    restarted = started_service(tmp_path, url)
    try:
        assert restarted.photos.dataset_files() == {"cat": [], "dog": [f"{prediction.photo_sha256}.jpg"]}
        assert restarted.counts()["unpublished"] == 0
        (entry,) = restarted.photos.read_manifest()
        assert entry["label"] == "dog"
    finally:
        restarted.close()


def test_a_crash_between_the_database_and_the_file_write_is_repaired(tmp_path):
    """The process dies right after the commit: simulated by committing the verdict with the
    store's own function and never publishing."""
    from feedback.store import queries

    url = f"sqlite:///{tmp_path}/db.sqlite"
    service = started_service(tmp_path, url)
    prediction = service.predict(photo(5))
    service.validate(prediction.id, "cat")
    with service.db.writing() as session:  # a correction, committed; then the "crash"
        queries.add_validation(session, prediction.photo_sha256, "dog", "api")
    service.close()
    assert (_store_root(service) / "dataset" / "cat" / f"{prediction.photo_sha256}.jpg").exists()
    restarted = started_service(tmp_path, url)
    try:
        assert restarted.photos.dataset_files() == {"cat": [], "dog": [f"{prediction.photo_sha256}.jpg"]}
        assert [e["label"] for e in restarted.photos.read_manifest()] == ["dog"]
    finally:
        restarted.close()


def test_a_crash_between_the_copy_and_the_removal_leaves_a_duplicate_then_repairs(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/db.sqlite"
    service = started_service(tmp_path, url)
    prediction = service.predict(photo(6))
    service.validate(prediction.id, "cat")
    monkeypatch.setattr(storage, "delete", FailAfter(storage.delete, 0))
    service.validate(prediction.id, "dog")
    name = f"{prediction.photo_sha256}.jpg"
    assert service.photos.dataset_files() == {"cat": [name], "dog": [name]}  # never nothing
    monkeypatch.undo()
    assert service.publisher.repair() == 1
    assert service.photos.dataset_files() == {"cat": [], "dog": [name]}
    service.close()


def test_a_failed_prediction_stores_nothing(tmp_path):
    from feedback.predictor_client.client import PredictorError

    fake = FakePredictor()
    fake.error = PredictorError("the predictor at http://x is unreachable", "unreachable")
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", predictor=fake)
    try:
        with pytest.raises(PredictorError):
            service.predict(photo(7))
        assert service.counts()["photos"] == 0 and service.counts()["predictions"] == 0
        assert not list((_store_root(service) / "photos").rglob("*"))
    finally:
        service.close()


def test_labelled_photos_go_straight_into_the_dataset(tmp_path):
    from feedback.labelling.inputs import LabelledFile

    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    try:
        good, other = photo(8), photo(9)
        report = service.add_labelled([
            LabelledFile("a.jpg", good, "cat"), LabelledFile("b.jpg", other, "dog"),
            LabelledFile("again.jpg", good, "cat"), LabelledFile("moved.jpg", other, "cat"),
            LabelledFile("bad.jpg", b"nope", "cat"), LabelledFile("bird.jpg", photo(10), "bird"),
        ], by="importer")
        assert [a["outcome"] for a in report.added] == ["added", "added", "already in the dataset", "relabelled"]
        assert {r["name"]: r["reason"].split(" (")[0] for r in report.rejected} == {
            "bad.jpg": "not a decodable image", "bird.jpg": "unknown label 'bird'; choose one of ['cat', 'dog', 'neither']"}
        sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
        assert service.photos.dataset_files() == {"cat": sorted([f"{sha(good)}.jpg", f"{sha(other)}.jpg"]), "dog": []}
        assert service.publisher.flush_manifest() and not service.publisher.flush_manifest()  # written once, then nothing new
        assert {e["source"] for e in service.photos.read_manifest()} == {"upload-data"}
    finally:
        service.close()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_of_class_folders_is_read_by_folder_names_only():
    report = UploadReport()
    files = read_zip(_zip({
        "cats_and_dogs/train/cats/1.jpg": photo(1),  # ingest's folder names map to labels
        "dog/2.jpg": photo(2),
        "../../../etc/cat/3.jpg": photo(3),  # a traversal name: only the folder name counts
        "/abs/dog/4.jpg": photo(4),
        "__MACOSX/cat/._1.jpg": b"resource fork",
        "cat/.hidden.jpg": photo(5),
        "birds/5.jpg": photo(6),
        "top.jpg": photo(7),
    }), LABELS, {"cats": "cat", "dogs": "dog"}, LIMIT, 10 * LIMIT, report)
    assert [(f.name, f.label) for f in files] == [
        ("cats_and_dogs/train/cats/1.jpg", "cat"), ("dog/2.jpg", "dog"), ("../../../etc/cat/3.jpg", "cat"),
        ("/abs/dog/4.jpg", "dog")]
    assert {r["name"] for r in report.rejected} == {"birds/5.jpg", "top.jpg"}


def test_zip_limits():
    report = UploadReport()
    big = image_bytes("PNG", (300, 300))
    files = read_zip(_zip({"cat/big.png": big, "cat/ok.jpg": photo(1)}), LABELS, {}, 10_000, LIMIT, report)
    assert [f.name for f in files] == ["cat/ok.jpg"]
    assert "over the limit of 10,000 bytes" in report.rejected[0]["reason"]
    with pytest.raises(PhotoRejected, match="expands to more than") as error:
        read_zip(_zip({f"cat/{i}.jpg": photo(i) for i in range(5)}), LABELS, {}, LIMIT, len(photo(0)) * 2, UploadReport())
    assert error.value.status == 413
    with pytest.raises(PhotoRejected, match="not a zip file"):
        read_zip(b"PK\x03\x04 but not really a zip", LABELS, {}, LIMIT, LIMIT, UploadReport())


def test_labels_pair_with_files_or_one_for_all():
    assert pair_labels(["a", "b"], ["cat"]) == ["cat", "cat"]
    assert pair_labels(["a", "b"], ["cat", "dog"]) == ["cat", "dog"]
    with pytest.raises(PhotoRejected, match="2 file"):
        pair_labels(["a", "b"], ["cat", "dog", "cat"])


def test_the_manifest_follows_changes_in_the_background(tmp_path):
    from feedback.labelling.service import FeedbackService

    settings = feedback_settings(tmp_path, "http://127.0.0.1:9", database_url=f"sqlite:///{tmp_path}/db.sqlite")
    background = FeedbackService(settings, predictor=FakePredictor())
    background.start()  # with the maintenance thread
    try:
        prediction = background.predict(photo(11))
        background.validate(prediction.id, "dog")
        deadline = time.monotonic() + 10
        while not background.photos.read_manifest() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [e["sha256"] for e in background.photos.read_manifest()] == [prediction.photo_sha256]
    finally:
        background.close()


def test_a_failed_manifest_write_is_retried(tmp_path, monkeypatch):
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    try:
        prediction = service.predict(photo(12))
        service.validate(prediction.id, "cat")
        monkeypatch.setattr(storage, "write_text", FailAfter(storage.write_text, 0))
        assert service.publisher.flush_manifest() is False  # logged, still dirty
        monkeypatch.undo()
        assert service.publisher.flush_manifest() is True
        assert [e["label"] for e in service.photos.read_manifest()] == ["cat"]
    finally:
        service.close()


def test_one_photo_that_cannot_be_repaired_stops_neither_start_nor_the_others(tmp_path):
    from feedback.store import queries

    url = f"sqlite:///{tmp_path}/db.sqlite"
    service = started_service(tmp_path, url)
    broken, fine = service.predict(photo(13)), service.predict(photo(14))
    with service.db.writing() as session:  # two verdicts committed, then the "crash" before any file move
        queries.add_validation(session, broken.photo_sha256, "cat", "api")
        queries.add_validation(session, fine.photo_sha256, "dog", "api")
    Path(broken.photo.uri).unlink()  # and the first one's original is gone
    service.close()
    restarted = started_service(tmp_path, url)  # starts all the same
    try:
        assert restarted.photos.dataset_files() == {"cat": [], "dog": [f"{fine.photo_sha256}.jpg"]}
        assert restarted.counts()["unpublished"] == 1  # the broken one, still reported
        assert restarted.publisher.repair() == 0
    finally:
        restarted.close()


def test_a_manifest_replaced_by_an_older_snapshot_is_rewritten(tmp_path):
    """Another replica wrote its older snapshot over ours: repair notices the missing verdicts."""
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    try:
        first = service.predict(photo(15))
        service.validate(first.id, "cat")
        assert service.publisher.flush_manifest()
        older = service.photos.read_manifest(), service.photos.manifest_written_at()
        second = service.predict(photo(16))
        service.validate(second.id, "dog")
        assert service.publisher.flush_manifest()
        service.photos.write_manifest(*older)  # the other replica's write lands last
        assert service.publisher.flush_manifest() is False  # nothing changed in this process...
        service.publisher.repair()  # ...but the maintenance round compares the manifest with the database
        assert service.publisher.flush_manifest()
        assert {e["sha256"] for e in service.photos.read_manifest()} == {first.photo_sha256, second.photo_sha256}
    finally:
        service.close()


def test_a_heat_map_is_not_taken_from_another_model_version(tmp_path):
    from feedback.labelling.inputs import ModelChanged

    fake = FakePredictor(version="3")
    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite", predictor=fake)
    try:
        prediction = service.predict(photo(17))
        fake.version = "4"  # a new champion is served
        with pytest.raises(ModelChanged, match="now serves model 4.*made by 3"):
            service.explain(prediction.id)
        assert service.get(prediction.id).explanation is None
        fake.version = "3"
        assert service.explain(prediction.id).explanation["method"] == "grad-cam"
    finally:
        service.close()


def test_a_storage_failure_during_upload_data_rejects_that_photo_only(tmp_path, monkeypatch):
    from feedback.labelling.inputs import LabelledFile

    service = started_service(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    try:
        monkeypatch.setattr(storage, "write_bytes", FailAfter(storage.write_bytes, 1))  # the 2nd write fails
        report = service.add_labelled([LabelledFile("a.jpg", photo(18), "cat"), LabelledFile("b.jpg", photo(19), "dog")])
        assert [a["name"] for a in report.added] == ["a.jpg"]
        assert report.rejected == [{"name": "b.jpg", "reason": "not stored: the photo storage failed (OSError); try again"}]
        assert service.counts()["photos"] == 1
    finally:
        service.close()
