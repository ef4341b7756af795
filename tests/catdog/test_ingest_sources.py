"""The default DATA (cats_and_dogs_filtered.zip over https), its cache, and the offline message.

Nothing here reaches the network: downloads go to 127.0.0.1 (an http_server, or a port nobody
listens on), and the default URL is only ever read from a pre-filled cache or refused by a
patched urlopen.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from catdog import ingest, sources
from catdog.sources import (
    CATS_AND_DOGS_FILTERED_URL,
    IngestError,
    download_once,
    download_path,
)
from pipelines import local, run, words
from pipelines.config import PipelineConfig
from tests.helpers import free_port, make_source_with_splits, zip_folder

OFFLINE_HINT = "Offline? Pass DATA=path/to/class-folders (one sub-folder per class) or DATA=path/to/archive.zip"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """CATDOG_CACHE for this test (what the runner and the ingest step both read)."""
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def no_network(monkeypatch):
    """urlopen refuses like a machine without a network; the calls are recorded."""
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return calls


@pytest.fixture
def local_run(monkeypatch, tmp_path):
    """local.run_local replaced by the ingest step alone (reading the same cache); the configs it got."""
    configs = []

    def ingest_only(config, output_root, *progress_and_errors):
        configs.append(config)
        ingest.ingest_dataset(config.data_uri, tmp_path / "ingested", label_map=ingest.parse_label_map(config.label_map))
        (tmp_path / "run").mkdir(exist_ok=True)
        return tmp_path / "run"

    monkeypatch.setattr(local, "run_local", ingest_only)
    monkeypatch.setitem(words.RUNNER_SETTINGS, "OUTPUT_ROOT", str(tmp_path / "outputs"))  # its log, not the repo's
    return configs


def test_the_default_data_is_cats_and_dogs_filtered():
    assert PipelineConfig().data_uri == CATS_AND_DOGS_FILTERED_URL
    assert CATS_AND_DOGS_FILTERED_URL == "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"


def test_unreachable_url_says_what_to_pass_instead(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/cats_and_dogs_filtered.zip"  # nothing listens there
    with pytest.raises(IngestError) as err:
        download_once(url, tmp_path / "cache")
    message = str(err.value)
    assert message.startswith(f"cannot download {url}: ")
    assert OFFLINE_HINT in message
    assert f"or put a copy of the archive at {download_path(url, tmp_path / 'cache')}" in message
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []  # no partial file left behind


def test_make_run_offline_with_no_data_fails_first_with_the_hint(cache, no_network, local_run, capsys):
    assert run.main([]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot download {CATS_AND_DOGS_FILTERED_URL}: " in err and OFFLINE_HINT in err
    assert no_network == [CATS_AND_DOGS_FILTERED_URL]
    assert local_run == []  # nothing ran


def test_make_run_with_an_unreachable_data_url(cache, local_run, capsys):
    url = f"http://127.0.0.1:{free_port()}/photos.tar.gz"
    assert run.main([f"DATA={url}"]) == 2
    assert OFFLINE_HINT in capsys.readouterr().err
    assert local_run == []


def test_make_run_with_no_data_reads_a_filled_cache(tmp_path, cache, no_network, local_run, capsys):
    """A copy put where the hint says (or an earlier download) is used: no request at all."""
    archive = download_path(CATS_AND_DOGS_FILTERED_URL, cache)
    zip_folder(make_source_with_splits(tmp_path / "src"), archive)
    assert run.main([]) == 0
    assert no_network == []
    assert "downloading" not in capsys.readouterr().out
    [config] = local_run
    assert config.data_uri == CATS_AND_DOGS_FILTERED_URL
    result = ingest.load_manifest(tmp_path / "ingested")
    assert result.layout == "train_validation" and result.class_names == ["cat", "dog"]  # the default label_map


def test_the_runner_downloads_once_and_the_ingest_step_reads_the_cache(tmp_path, cache, http_server, local_run,
                                                                       capsys):
    zip_folder(make_source_with_splits(tmp_path / "src"), http_server.root / "cats_and_dogs_filtered.zip")
    url = http_server.url("cats_and_dogs_filtered.zip")
    assert run.main([f"DATA={url}"]) == 0
    assert f"downloading {url} into {cache} (once" in capsys.readouterr().out
    assert run.main([f"DATA={url}"]) == 0
    assert "downloading" not in capsys.readouterr().out
    assert http_server.requests == ["/cats_and_dogs_filtered.zip"]
    assert len(local_run) == 2


def test_cache_dir_follows_catdog_cache_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("CATDOG_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sources.default_cache_dir() == tmp_path / "home" / ".cache" / "catdog"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.default_cache_dir() == tmp_path / "xdg" / "catdog"
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "mine"))
    assert sources.default_cache_dir() == tmp_path / "mine"
