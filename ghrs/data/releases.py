"""MovieLens release files: find a local copy, remember it, check a cached zip, or download the release.

Where a release is looked for, in order:

1. ``root`` (config ``dataset.root``, default ``$GHRS_DATA_DIR``): a directory holding ``ml-100k/`` /
   ``ml-100k.zip`` (or the files themselves), or a zip file;
2. the ``data/`` folders (:func:`ghrs.paths.data_dirs`: the checkout's ``data/`` and ``./data``);
3. a local copy found by 1 or 2 on an earlier run: its path is remembered in the cache directory
   (``<cache>/<name>.path``), so the variable is needed once; the file itself is never copied;
4. ``<cache>/<name>.zip`` (a download, or a zip the user put there);
5. a download from GroupLens into the cache, checked against the release's md5.

A local copy is checked by content (files present; the loader labels a copy with other row counts a
subset), since a re-zipped copy has another md5. A cached zip that fails the release md5 is checked
member by member (inner-file md5s, where the release lists them; row counts otherwise): a valid re-zip
is kept with a warning. Nothing a user put in place is ever deleted: only a file this module downloaded
itself (recorded in ``<cache>/<name>.zip.origin.json``) that fails both checks is removed and fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import urllib.request
import zipfile
from pathlib import Path

from ghrs.data.dataset import DataError
from ghrs.errors import UserError
from ghrs.io import write_bytes_atomic
from ghrs.paths import data_dirs as default_data_dirs

log = logging.getLogger(__name__)

# Inner files of GroupLens's ml-100k.zip (md5 of each member's bytes; the release's mku.sh is optional).
ML100K_MEMBERS = {
    "README": "364aae5a5037ed015864d55c04f1f476",
    "allbut.pl": "7111b21765584d73b2c0c446f3213013",
    "u.data": "6e47046882bad158b0efbb84cd5cb987",
    "u.genre": "a7578bdb37758741ae9429d2c736af18",
    "u.info": "6cae0afd8c0341aff31b631a192e57e6",
    "u.item": "c9e7f390115d79079537301d5204f3f7",
    "u.occupation": "035abaa2165f35cebce4b91e03481e0a",
    "u.user": "1b53539edc13caad0282c8500608a319",
    "u1.base": "4325f44281c9f8c119a3694662d63fc2",
    "u1.test": "62d5d837e7c8e36550cc956b09c2ecc8",
    "u2.base": "79541afecccbd5365bb2c09b123a01c7",
    "u2.test": "1951a71b7e1f4ed254508007fa2f6b70",
    "u3.base": "55c67a63f516fa9e593d68c3be779970",
    "u3.test": "cb3e4d0a9152041772285232ca002d4f",
    "u4.base": "66f64a75eeeffd20ff09533bcd31adcf",
    "u4.test": "328acfca94e85d01b1d7e92c7d73df3b",
    "u5.base": "0becb3392339231c08ba316944c79095",
    "u5.test": "bec898f7091dba3b7bdf793d1998d2d6",
    "ua.base": "346eb46a756be3b382bdef4f7dcf3a01",
    "ua.test": "52e5d0355092dc1596899855b220508f",
    "ub.base": "e4ce94f6e01e45f65b91a70bb9e8da2f",
    "ub.test": "5292d1e388d156aa0c19c384cdf35aca",
}

_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
RELEASES = {
    "ml-100k": {
        "title": "MovieLens 100K",
        "url": f"{_GROUPLENS}/ml-100k.zip",
        "md5": "0e33842e24a9c977be4e0107933c0723",
        "files": ("u.data", "u.user", "u.item", "u.genre"),
        "n_ratings": 100_000,
        "members": ML100K_MEMBERS,
    },
    "ml-1m": {
        "title": "MovieLens 1M",
        "url": f"{_GROUPLENS}/ml-1m.zip",
        "md5": "c4d9eecfca2ab87c1945afe126590906",
        "files": ("ratings.dat", "users.dat", "movies.dat"),
        "n_ratings": 1_000_209,
    },
    # The larger releases have no user demographics (GHRS then runs on graph features alone) and
    # half-star ratings.
    "ml-10m": {
        "title": "MovieLens 10M",
        "url": f"{_GROUPLENS}/ml-10m.zip",
        "md5": "ce571fd55effeba0271552578f2648bd",
        "files": ("ratings.dat", "movies.dat"),
        "n_ratings": 10_000_054,
    },
    "ml-20m": {
        "title": "MovieLens 20M",
        "url": f"{_GROUPLENS}/ml-20m.zip",
        "md5": "cd245b17a1ae2cc31bb14903e1204af3",
        "files": ("ratings.csv", "movies.csv"),
        "n_ratings": 20_000_263,
    },
    "ml-25m": {
        "title": "MovieLens 25M",
        "url": f"{_GROUPLENS}/ml-25m.zip",
        "md5": "6b51fb2759a8657d3bfcbfc42b592ada",
        "files": ("ratings.csv", "movies.csv"),
        "n_ratings": 25_000_095,
    },
    "ml-latest-small": {  # a living release: GroupLens updates it, so there is no fixed md5 or size
        "title": "MovieLens latest-small",
        "url": f"{_GROUPLENS}/ml-latest-small.zip",
        "md5": None,
        "files": ("ratings.csv", "movies.csv"),
        "n_ratings": None,
    },
}


class DataMissing(UserError, FileNotFoundError):
    """No local copy of a release and no download (offline, or ``dataset.download=false``)."""


class ReleaseFiles:
    """Read-only access to a release's files inside a directory or a zip (any folder depth)."""

    def __init__(self, path: Path, wanted: tuple[str, ...] = ()):
        self.path = path
        self.members: dict[str, str] = {}
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    self.members.setdefault(f.name, str(f))
        else:
            try:
                with zipfile.ZipFile(path) as zf:
                    bad = zf.testzip()
                    if bad is not None:
                        raise DataError(f"corrupt member {bad} (CRC mismatch)", str(path))
                    for info in zf.infolist():
                        if not info.is_dir():
                            self.members.setdefault(Path(info.filename).name, info.filename)
            except (zipfile.BadZipFile, EOFError, OSError) as err:
                raise DataError(f"not a readable zip (corrupt or truncated download?): {err}", str(path)) from err

    def has(self, names) -> bool:
        return all(n in self.members for n in names)

    def read(self, name: str) -> bytes:
        if name not in self.members:
            raise DataError(f"file {name} not found", str(self.path))
        if self.path.is_dir():
            return Path(self.members[name]).read_bytes()
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(self.members[name])

    def label(self, name: str) -> str:
        return f"{self.path}:{self.members.get(name, name)}"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_problem(files: ReleaseFiles, name: str) -> str | None:
    """Why ``files`` is not the release ``name`` by content (None: it is).

    Releases with a member list: every listed member present with the release's md5. Others: the
    expected files present and the ratings file's row count equal to the release's.
    """
    spec = RELEASES[name]
    members = spec.get("members")
    if members:
        for member, expected in members.items():
            if member not in files.members:
                return f"member {member} is missing"
            got = hashlib.md5(files.read(member)).hexdigest()
            if got != expected:
                return f"member {member} has md5 {got}, the release's is {expected}"
        return None
    missing = [f for f in spec["files"] if f not in files.members]
    if missing:
        return f"files {missing} are missing"
    if spec["n_ratings"] is not None:
        ratings = spec["files"][0]
        raw = files.read(ratings)
        rows = raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0) - ratings.endswith(".csv")
        if rows != spec["n_ratings"]:
            return f"{ratings} has {rows:,} rows, the release has {spec['n_ratings']:,}"
    return None


def _local_candidates(root: Path, name: str, bare_root: bool = True) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        log.warning("dataset.root / GHRS_DATA_DIR points at %s, which does not exist", root)
        return []
    found = [root / name, root / f"{name}.zip"] + ([root] if bare_root else [])
    # Fallback: a partial copy named like the release (e.g. ml-1m-users-1-2999.zip); labelled a subset later.
    found += sorted(root.glob(f"{name}-*.zip")) + sorted(p for p in root.glob(f"{name}-*") if p.is_dir())
    return [p for p in found if p.exists()]


def _find_local(root: Path, name: str, bare_root: bool) -> ReleaseFiles | None:
    for cand in _local_candidates(root, name, bare_root):
        files = ReleaseFiles(cand)
        if files.has(RELEASES[name]["files"]):
            return files
    return None


def _remember(cache_dir: Path, name: str, copy: Path) -> None:
    """Record where a local copy is, so later runs find it without ``GHRS_DATA_DIR`` (a path, not a copy)."""
    record = cache_dir / f"{name}.path"
    target = str(copy.resolve())
    try:
        if record.is_file() and record.read_text().strip() == target:
            return
        write_bytes_atomic(record, (target + "\n").encode())
        log.info("%s: remembered the local copy %s in %s", name, target, record)
    except OSError as err:  # a read-only cache is no reason to fail the run
        log.warning("%s: could not remember the local copy in %s: %s", name, record, err)


def _remembered(cache_dir: Path, name: str) -> ReleaseFiles | None:
    record = cache_dir / f"{name}.path"
    if not record.is_file():
        return None
    path = Path(record.read_text().strip())
    files = None
    if path.exists():
        try:
            files = ReleaseFiles(path)
        except DataError as err:
            log.warning("%s: the remembered copy is unreadable (%s)", name, err)
    if files is None or not files.has(RELEASES[name]["files"]):
        log.warning("%s: the remembered local copy %s is gone or incomplete: forgetting it (%s)", name, path, record)
        record.unlink(missing_ok=True)  # our own record, not user data
        return None
    log.info("%s: reading the local copy %s (remembered in %s)", name, path, record)
    return files


def _origin(cached: Path) -> Path:
    return cached.with_name(cached.name + ".origin.json")


def _use_cached(cached: Path, name: str) -> ReleaseFiles | None:
    """The cached zip when it is the release by md5 or by content; None after removing a bad download."""
    spec = RELEASES[name]
    digest = md5sum(cached)
    if spec["md5"] is None or digest == spec["md5"]:
        return ReleaseFiles(cached)
    try:
        files = ReleaseFiles(cached)
        problem = content_problem(files, name)
    except DataError as err:
        files, problem = None, err.problem
    if problem is None:
        log.warning("%s: md5 %s differs from the GroupLens zip's %s, but its content matches the release "
                    "member by member: keeping it", cached, digest, spec["md5"])
        return files
    origin = _origin(cached)
    ours = origin.is_file() and json.loads(origin.read_text()).get("size") == cached.stat().st_size
    if not ours:  # the user put it there: never deleted
        raise DataError(f"fails the {name} release's md5 ({digest}, expected {spec['md5']}) and its content "
                        f"check ({problem}); replace it with the GroupLens release ({spec['url']}) or remove it",
                        str(cached))
    log.warning("%s: a download of ours fails its md5 and content checks (%s): removing it", cached, problem)
    cached.unlink()
    origin.unlink(missing_ok=True)
    return None


def download_release(name: str, cache_dir: Path) -> Path:
    """Download a release zip into ``cache_dir`` with its md5 checked; a bad download is removed."""
    from tqdm.auto import tqdm

    spec = RELEASES[name]
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"{name}.zip"
    part = cache_dir / f"{name}.zip.part"
    try:
        with urllib.request.urlopen(spec["url"], timeout=60) as resp, open(part, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}", disable=None) as bar:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    fh.write(block)
                    bar.update(len(block))
    except BaseException:
        part.unlink(missing_ok=True)  # our own partial file
        raise
    digest = md5sum(part)
    if spec["md5"] is None:
        ReleaseFiles(part)  # no published md5: at least check the zip reads back whole
        log.warning("%s has no published md5; downloaded file %s is %s", name, final, digest)
    elif digest != spec["md5"]:
        part.unlink()
        raise DataError(f"md5 mismatch for the download of {spec['url']}: got {digest}, expected {spec['md5']}; "
                        "the partial file was removed, try again", str(final))
    os.replace(part, final)
    write_bytes_atomic(_origin(final), json.dumps({"url": spec["url"], "md5": digest,
                                                   "size": final.stat().st_size}).encode())
    return final


def missing_message(name: str, reason: str, dirs: list[Path] | None = None) -> str:
    """One line: the release, its URL, and both ways to provide a local copy."""
    spec = RELEASES[name]
    where = (dirs or default_data_dirs())[0]
    return (f"{spec['title']} ({name}) is not available: {reason}. Download {spec['url']} on a machine with "
            f"network and either put {name}.zip into {where}/ or set GHRS_DATA_DIR to the folder holding it")


def locate(
    name: str,
    root: str | os.PathLike | None,
    cache_dir: Path,
    download: bool,
    data_dirs: list[Path] | None = None,
) -> ReleaseFiles:
    """Find the release files (see the module docstring for the order)."""
    if name not in RELEASES:
        raise DataError(f"dataset.name must be one of {sorted(RELEASES)}, got {name!r}")
    wanted = RELEASES[name]["files"]
    dirs = default_data_dirs() if data_dirs is None else list(data_dirs)
    root = root or os.environ.get("GHRS_DATA_DIR") or None
    if root:
        files = _find_local(Path(root).expanduser(), name, bare_root=True)
        if files is not None:
            log.info("%s: reading the local copy %s", name, files.path)
            _remember(cache_dir, name, files.path)
            return files
        log.warning("%s: no copy with %s under %s; trying %s and the cache", name, wanted, root,
                    ", ".join(map(str, dirs)))
    for folder in dirs:
        files = _find_local(folder, name, bare_root=False) if folder.is_dir() else None
        if files is not None:
            log.info("%s: reading the local copy %s", name, files.path)
            _remember(cache_dir, name, files.path)
            return files
    files = _remembered(cache_dir, name)
    if files is not None:
        return files
    cached = cache_dir / f"{name}.zip"
    if cached.exists():
        files = _use_cached(cached, name)
        if files is not None:
            return files
    if not download:
        raise DataMissing(missing_message(name, "no local copy was found and dataset.download=false", dirs))
    try:
        return ReleaseFiles(download_release(name, cache_dir))
    except (OSError, http.client.HTTPException) as err:  # offline, DNS, refused, HTTP error, ...
        reason = " ".join(str(getattr(err, "reason", None) or err).split())
        raise DataMissing(missing_message(name, f"no local copy was found and the download failed ({reason})",
                                          dirs)) from err
