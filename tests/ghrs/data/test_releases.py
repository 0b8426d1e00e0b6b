import hashlib
import io
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ghrs.data import releases
from ghrs.data.dataset import DataError
from ghrs.data.movielens import load_movielens
from ghrs.data.releases import DataMissing, locate
from ghrs.errors import UserError
from ghrs.paths import data_dirs
from tests.ghrs.data.fixtures import write_ml1m, write_ml100k, zip_folder

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
REAL = Path(os.environ.get("GHRS_DATA_DIR", SHARED))


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("GHRS_DATA_DIR", raising=False)


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def synthetic_release(tmp_path, monkeypatch):
    """A synthetic ml-100k whose member md5s stand in for GroupLens's (the release md5 matches nothing)."""
    folder = write_ml100k(tmp_path / "src")
    members = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    spec = {**releases.RELEASES["ml-100k"], "members": members, "n_ratings": None}
    monkeypatch.setitem(releases.RELEASES, "ml-100k", spec)
    return folder


def test_zip_in_a_data_folder_is_found_and_the_cwd_data_folder_is_searched(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    zip_folder(write_ml100k(tmp_path / "src"), data / "ml-100k.zip")
    files = locate("ml-100k", None, tmp_path / "cache", download=False, data_dirs=[data])
    assert files.path == data / "ml-100k.zip"
    monkeypatch.chdir(tmp_path)
    assert tmp_path / "data" in [d.resolve() for d in data_dirs()]


def test_local_copy_found_once_is_remembered_without_the_variable(tmp_path, offline):
    zipped = zip_folder(write_ml100k(tmp_path / "src"), tmp_path / "elsewhere.zip")
    cache = tmp_path / "cache"
    first = load_movielens("ml-100k", root=str(zipped), cache_dir=str(cache), data_dirs=[])
    assert (cache / "ml-100k.path").read_text().strip() == str(zipped.resolve())
    assert not (cache / "ml-100k.zip").exists()  # a path record, never a copy of MovieLens
    again = load_movielens("ml-100k", root=None, cache_dir=str(cache), data_dirs=[])  # no variable, offline
    assert again.ratings.equals(first.ratings)
    zipped.unlink()
    with pytest.raises(DataMissing):
        load_movielens("ml-100k", root=None, cache_dir=str(cache), data_dirs=[])
    assert not (cache / "ml-100k.path").exists()  # the stale record is forgotten


def test_offline_error_is_one_line_naming_release_url_and_both_remedies(tmp_path, offline):
    with pytest.raises(UserError) as err:
        locate("ml-100k", None, tmp_path / "cache", download=True, data_dirs=[tmp_path / "data"])
    msg = str(err.value)
    assert "\n" not in msg
    assert "MovieLens 100K" in msg and releases.RELEASES["ml-100k"]["url"] in msg
    assert "GHRS_DATA_DIR" in msg and f"{tmp_path / 'data'}/" in msg and "name resolution" in msg
    assert not list((tmp_path / "cache").glob("*.part"))  # nothing half-written left behind
    with pytest.raises(DataMissing, match="dataset.download=false.*ml-100k.zip into"):
        locate("ml-100k", None, tmp_path / "cache", download=False, data_dirs=[])


def test_rezipped_cache_is_kept_by_content_with_a_warning(tmp_path, synthetic_release, caplog, offline):
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = zip_folder(synthetic_release, cache / "ml-100k.zip")
    with caplog.at_level(logging.WARNING, logger="ghrs.data.releases"):
        ds = load_movielens("ml-100k", root=None, cache_dir=str(cache), data_dirs=[])
    assert len(ds.ratings) > 0 and cached.exists()
    assert "matches the release member by member" in caplog.text


def test_cache_that_fails_both_checks_is_kept_unless_we_downloaded_it(tmp_path, synthetic_release, offline):
    cache = tmp_path / "cache"
    cache.mkdir()
    (synthetic_release / "u.user").write_text("1|20|M|writer|00000\n")  # content no longer the release's
    cached = zip_folder(synthetic_release, cache / "ml-100k.zip")
    with pytest.raises(DataError, match="member u.user has md5"):
        locate("ml-100k", None, cache, download=True, data_dirs=[])
    assert cached.exists()  # the user's file: never deleted
    # the same bad file recorded as a download of ours is removed and fetched again (offline here)
    (cache / "ml-100k.zip.origin.json").write_text(json.dumps({"size": cached.stat().st_size}))
    with pytest.raises(DataMissing, match="download failed"):
        locate("ml-100k", None, cache, download=True, data_dirs=[])
    assert not cached.exists()


def test_release_without_member_list_is_checked_by_row_count(tmp_path, monkeypatch):
    folder = write_ml1m(tmp_path / "src")
    n = len((folder / "ratings.dat").read_text().splitlines())
    cache = tmp_path / "cache"
    cache.mkdir()
    zip_folder(folder, cache / "ml-1m.zip")
    monkeypatch.setitem(releases.RELEASES, "ml-1m", {**releases.RELEASES["ml-1m"], "n_ratings": n})
    assert locate("ml-1m", None, cache, download=False, data_dirs=[]).path == cache / "ml-1m.zip"
    monkeypatch.setitem(releases.RELEASES, "ml-1m", {**releases.RELEASES["ml-1m"], "n_ratings": n + 1})
    with pytest.raises(DataError, match=f"ratings.dat has {n:,} rows"):
        locate("ml-1m", None, cache, download=False, data_dirs=[])


class _Response(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_download_is_md5_checked_and_recorded_as_ours(tmp_path, monkeypatch):
    payload = zip_folder(write_ml100k(tmp_path / "src"), tmp_path / "served.zip").read_bytes()
    spec = {**releases.RELEASES["ml-100k"], "md5": hashlib.md5(payload).hexdigest()}
    monkeypatch.setitem(releases.RELEASES, "ml-100k", spec)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _Response(payload))
    cache = tmp_path / "cache"
    files = locate("ml-100k", None, cache, download=True, data_dirs=[])
    assert files.path == cache / "ml-100k.zip" and files.path.read_bytes() == payload
    assert json.loads((cache / "ml-100k.zip.origin.json").read_text())["md5"] == spec["md5"]
    monkeypatch.setitem(releases.RELEASES, "ml-100k", {**spec, "md5": "0" * 32})
    (cache / "ml-100k.zip").unlink()
    with pytest.raises(DataError, match="md5 mismatch for the download"):
        locate("ml-100k", None, cache, download=True, data_dirs=[])
    assert not (cache / "ml-100k.zip").exists() and not list(cache.glob("*.part"))


@pytest.mark.realdata
def test_real_rezipped_ml100k_in_the_cache_is_kept(tmp_path, caplog):
    if not (REAL / "ml-100k.zip").exists():
        pytest.skip(f"real MovieLens not found at {REAL}")
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(REAL / "ml-100k.zip", cache / "ml-100k.zip")  # a re-zip: not GroupLens's md5
    with caplog.at_level(logging.WARNING, logger="ghrs.data.releases"):
        files = locate("ml-100k", None, cache, download=False, data_dirs=[])
    assert files.path == cache / "ml-100k.zip" and "member by member" in caplog.text
