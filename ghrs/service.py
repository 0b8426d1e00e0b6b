"""A trained recommender held in memory and shared by concurrent requests (what ``ghrs.serve`` exposes).

:class:`RecommenderService` answers in raw ids: top-k per user, rating predictions, new users folded in
from a few ratings and/or side information, single interactions streamed into a user's state, and
snapshots into a new run directory. It knows nothing about HTTP; a bad request raises
:class:`RequestError` (a :class:`~ghrs.errors.UserError` that names the offending field and the HTTP
status), always *before* anything is changed.

Concurrency model:

- every mutation (event, new user, snapshot) holds ``_mutation``, so mutations are applied one at a
  time, each exactly once; events are validated and ordered in a queue first (``_queue``) and applied
  in queue order, several at once when they arrive together (group commit); an event's reply says its
  position in the user's history;
- readers (recommend, predict, stats) hold the shared side of a readers-writer lock; a mutation that
  changes the model in place (one recurrent step per event) holds the exclusive side, so a reader never
  sees a half-applied event;
- slow mutations (folding in a user, an event that makes the model re-encode its history) work on a
  copy of the model while readers keep reading the current one, then swap it in under the exclusive
  lock (copy-on-write): a failure leaves the served model untouched;
- a snapshot holds ``_mutation`` only: no writer can run, readers continue.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from ghrs.errors import UserError
from ghrs.models.base import Recommender
from ghrs.serving import MODEL_FILE, load_run, top_items

MAX_BATCH = 1000  # users per POST /recommend, pairs per POST /predict, ratings per new user
SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class RequestError(UserError):
    """A request the service refuses; ``loc`` names the field (FastAPI's convention: ("body", "k"))."""

    def __init__(self, loc: tuple, message: str, status: int = 422, kind: str = "value_error"):
        super().__init__(message)
        self.loc, self.message, self.status, self.kind = tuple(loc), message, status, kind


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def write_run(run_dir: Path, model: Recommender, config: dict) -> None:
    """The run directory's artefacts (``config.yaml`` + the model) through the project's writer."""
    from ghrs.pipeline import save_model

    cfg = OmegaConf.create(config)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    save_model(run_dir / MODEL_FILE, model, cfg)


def read_run(run: str | Path) -> tuple[Recommender, dict]:
    """:func:`ghrs.serving.load_run` with a missing run as a user error."""
    try:
        return load_run(run)
    except FileNotFoundError as err:
        raise UserError(str(err)) from err


class RecommenderService:
    """Thread-safe serving state around a fitted :class:`Recommender` (see the module docstring).

    Args:
        model: a fitted model (its ``history`` is what it conditions on).
        config: the run's resolved training config (written into snapshots).
        run_dir: where the model was loaded from (reported; default parent of snapshots).
        snapshot_dir: where ``snapshot`` creates new run directories (default ``<run_dir>/snapshots``).
    """

    def __init__(self, model: Recommender, config: dict | None = None, run_dir: str | Path | None = None,
                 snapshot_dir: str | Path | None = None):
        self.config = dict(config or {})
        self.run_dir = None if run_dir is None else Path(run_dir)
        if snapshot_dir is None and self.run_dir is not None and self.run_dir.is_dir():
            snapshot_dir = self.run_dir / "snapshots"
        self.snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir)
        self._mutation = threading.Lock()
        self._queue = threading.RLock()  # orders and validates events; guards the queue and the id maps
        self._pending: list[_Job] = []
        self._rw = ReadWriteLock()
        self.events_applied = 0
        self.users_added = 0
        self.started = time.time()
        self._install(model)

    @classmethod
    def from_run(cls, run: str | Path, snapshot_dir: str | Path | None = None) -> RecommenderService:
        model, config = read_run(run)
        run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
        return cls(model, config, run_dir, snapshot_dir)

    # -- derived lookup tables (rebuilt when a new model is swapped in) ------------------------------

    def _install(self, model: Recommender) -> None:
        """Make ``model`` the served one, with raw-id maps, each user's seen items and latest time."""
        ds = model.dataset
        h = model.history
        users = h["user"].to_numpy()
        order = np.argsort(users, kind="stable")
        bounds = np.searchsorted(users[order], np.arange(ds.n_users + 1))
        items = h["item"].to_numpy()[order]
        self._seen = [items[bounds[u]:bounds[u + 1]] for u in range(ds.n_users)]
        last = np.full(ds.n_users, np.iinfo(np.int64).min)
        np.maximum.at(last, users, h["timestamp"].to_numpy().astype(np.int64))
        self._last_ts = last
        self._clock = int(h["timestamp"].max()) if len(h) else 0
        self._count = np.array([len(s) for s in self._seen], dtype=np.int64)
        self._users = {self._py(u): i for i, u in enumerate(ds.user_ids)}
        self._items = {self._py(i): j for j, i in enumerate(ds.item_ids)}
        self._int_users = ds.user_ids.dtype.kind in "iu"
        self._int_items = ds.item_ids.dtype.kind in "iu"
        self.model = model

    @staticmethod
    def _py(raw):
        return raw.item() if isinstance(raw, np.generic) else raw

    def _index(self, raw, kind: str, loc: tuple) -> int:
        """Raw id (int or str as sent) -> index; 422 if it cannot be an id of this kind, 404 if unknown."""
        table, numeric = (self._users, self._int_users) if kind == "user" else (self._items, self._int_items)
        key = raw
        if numeric:
            if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                raise RequestError(loc, f"{kind} id must be an integer, got {raw!r}")
            try:
                key = int(raw)
            except ValueError:
                raise RequestError(loc, f"{kind} id must be an integer, got {raw!r}") from None
        else:
            key = str(raw)
        if key not in table:
            raise RequestError(loc, f"unknown {kind} id {raw!r}", status=404, kind="unknown_id")
        return table[key]

    def _check_k(self, k: int, loc: tuple) -> None:
        n = self.model.dataset.n_items
        if not 1 <= k <= n:
            raise RequestError(loc, f"k must be in [1, {n}] (the number of items), got {k}")

    def _check_rating(self, rating: float, loc: tuple) -> float:
        lo, hi = self.model.dataset.rating_scale
        if not (np.isfinite(rating) and lo <= rating <= hi):
            raise RequestError(loc, f"rating must be in the rating scale [{lo:g}, {hi:g}], got {rating!r}")
        return float(rating)

    # -- reads -------------------------------------------------------------------------------------

    def recommend(self, users: list, k: int = 10, exclude_seen: bool = True, query: bool = False) -> list[dict]:
        """Top-``k`` items per raw user id: ``[{"user", "items": [{rank, item, title, score}]}]``.

        ``exclude_seen``: leave out items the user has interacted with (fewer than k when too few remain).
        ``query``: errors name the query parameters ``user``/``k`` (GET) instead of the body's ``users``/``k``.
        """
        loc, k_loc = (("query", "user"), ("query", "k")) if query else (("body", "users"), ("body", "k"))
        if not users:
            raise RequestError(loc, "give at least one user id")
        if len(users) > MAX_BATCH:
            raise RequestError(loc, f"at most {MAX_BATCH} users per request, got {len(users)}")
        with self._rw.read():
            model = self.model
            self._check_k(k, k_loc)
            idx = [self._index(u, "user", loc if query else loc + (n,)) for n, u in enumerate(users)]
            scores = np.asarray(model.score(np.asarray(idx, dtype=np.int64)), dtype=np.float64)
            ds = model.dataset
            out = []
            for u, row in zip(idx, scores):
                top, top_scores = top_items(row, self._seen[u] if exclude_seen else None, k)
                titles = ds.item_titles(top)
                out.append({"user": self._py(ds.user_ids[u]), "items": [
                    {"rank": r, "item": self._py(ds.item_ids[i]), "title": t, "score": float(s)}
                    for r, (i, t, s) in enumerate(zip(top, titles, top_scores), start=1)]})
            return out

    def predict(self, pairs: list[tuple]) -> list[dict]:
        """Rating predictions for raw ``(user, item)`` pairs, in input order."""
        if not pairs:
            raise RequestError(("body", "pairs"), "give at least one (user, item) pair")
        if len(pairs) > MAX_BATCH * 10:
            raise RequestError(("body", "pairs"), f"at most {MAX_BATCH * 10} pairs per request, got {len(pairs)}")
        with self._rw.read():
            model = self.model
            if not model.predicts_ratings:
                raise RequestError(("body", "pairs"), f"{type(model).__name__} ranks items but does not "
                                   "predict ratings: use /recommend")
            u = [self._index(p[0], "user", ("body", "pairs", n, "user")) for n, p in enumerate(pairs)]
            i = [self._index(p[1], "item", ("body", "pairs", n, "item")) for n, p in enumerate(pairs)]
            pred = model.predict(np.asarray(u, dtype=np.int64), np.asarray(i, dtype=np.int64))
            ds = model.dataset
        return [{"user": self._py(ds.user_ids[a]), "item": self._py(ds.item_ids[b]), "rating": float(r)}
                for a, b, r in zip(u, i, pred)]

    def stats(self) -> dict:
        with self._rw.read():
            model = self.model
            ds = model.dataset
            encoder = getattr(getattr(getattr(model, "net", None), "encoder", None), "layer", None)
            return {
                "model": type(model).__name__, "encoder": encoder, "dataset": ds.name,
                "users": int(ds.n_users), "items": int(ds.n_items), "interactions": len(model.history),
                "events_applied": self.events_applied, "users_added": self.users_added,
                "run": None if self.run_dir is None else str(self.run_dir),
            }

    # -- writes ------------------------------------------------------------------------------------

    def add_event(self, user, item, rating: float | None = None, ts: int | None = None) -> dict:
        """Append one interaction of a known user and advance its state (one encoder step when the model
        streams; else the history is re-encoded on a copy). Returns the event as stored and its 1-based
        ``position`` among the user's interactions.

        ``rating`` omitted: an implicit interaction, stored as the middle of the rating scale. ``ts``
        omitted: one second after the newest interaction the service knows. A ``ts`` older than the
        user's latest interaction is refused (409): a history must stay in time order for a restart
        from a snapshot to rebuild the same state.

        Group commit: the event is validated, ordered and queued under ``_queue``; then whichever request
        gets ``_mutation`` first applies every queued event in one ``observe`` call (the order of the
        queue, per user in time order), so concurrent events share one lock hand-off and one refresh.
        """
        with self._queue:
            model = self.model
            u = self._index(user, "user", ("body", "user"))
            i = self._index(item, "item", ("body", "item"))
            lo, hi = model.dataset.rating_scale
            r = (lo + hi) / 2 if rating is None else self._check_rating(rating, ("body", "rating"))
            t = self._clock + 1 if ts is None else int(ts)
            if t < self._last_ts[u]:
                raise RequestError(("body", "ts"), f"ts {t} is older than user {user!r}'s latest interaction "
                                   f"({self._last_ts[u]}): events must arrive in time order", status=409)
            self._last_ts[u], self._clock = t, max(self._clock, t)
            self._count[u] += 1
            ds = model.dataset
            job = _Job((u, i, r, t), {"user": self._py(ds.user_ids[u]), "item": self._py(ds.item_ids[i]),
                                      "rating": r, "ts": t, "position": int(self._count[u])})
            self._pending.append(job)
        with self._mutation:
            if not job.done:
                self._apply_pending()
        if job.error is not None:
            raise job.error
        return job.reply

    def _apply_pending(self) -> None:
        """Apply every queued event (caller holds ``_mutation``)."""
        with self._queue:
            jobs, self._pending = self._pending, []
        if not jobs:
            return
        u, i, r, t = zip(*(j.row for j in jobs))
        frame = pd.DataFrame({"user": np.array(u, np.int64), "item": np.array(i, np.int64),
                              "rating": np.array(r, np.float32), "timestamp": np.array(t, np.int64)})
        model = self.model
        try:
            if all(_steps_in_place(model, u) for u in np.unique(frame["user"].to_numpy())):
                with self._rw.write():
                    model.observe(frame)
                    self._after_events(jobs)
            else:
                new = copy.deepcopy(model)
                new.observe(frame)
                with self._rw.write():
                    self.model = new
                    self._after_events(jobs)
        except BaseException as err:  # a bug: the queued events fail, the served model is as before
            for j in jobs:
                j.error = err
            with self._queue, self._rw.write():
                self._install(self.model)
            raise
        finally:
            for j in jobs:
                j.done = True

    def _after_events(self, jobs: list[_Job]) -> None:
        for j in jobs:
            u, i = j.row[0], j.row[1]
            self._seen[u] = np.append(self._seen[u], i)
        self.events_applied += len(jobs)

    def add_user(self, history: list, side: dict | None = None) -> dict:
        """Fold in a new user from ``history`` ``[[item, rating(, ts)], ...]`` and/or ``side`` information
        (no retraining); returns ``{"user": new id, "interactions": n}``."""
        side = dict(side or {})
        if not history and not side:
            raise RequestError(("body",), "give a history of ratings and/or side information for a new user")
        if len(history) > MAX_BATCH:
            raise RequestError(("body", "history"), f"at most {MAX_BATCH} ratings, got {len(history)}")
        with self._mutation, self._queue:  # no event is queued meanwhile; queued ones go first
            self._apply_pending()
            model = self.model
            ds = model.dataset
            rows = []
            for n, entry in enumerate(history):
                item = self._index(entry[0], "item", ("body", "history", n, 0))
                rating = self._check_rating(entry[1], ("body", "history", n, 1))
                ts = entry[2] if len(entry) > 2 and entry[2] is not None else self._clock + 1 + n
                rows.append((item, rating, int(ts)))
            self._check_side(side, ds)
            new_id = self._new_user_id(ds.user_ids)
            new = copy.deepcopy(model)  # copy-on-write: readers keep the current model meanwhile
            side_df = pd.DataFrame([{**side, "id": new_id}]) if side else None
            u = int(new.add_users(np.array([new_id], dtype=ds.user_ids.dtype), side_df)[0])
            if rows:
                frame = pd.DataFrame({"user": np.full(len(rows), u, np.int64),
                                      "item": np.array([r[0] for r in rows], np.int64),
                                      "rating": np.array([r[1] for r in rows], np.float32),
                                      "timestamp": np.array([r[2] for r in rows], np.int64)})
                new.set_history(pd.concat([new.history, frame], ignore_index=True))
            with self._rw.write():
                self._install(new)
                self.users_added += 1
            return {"user": new_id, "interactions": len(rows)}

    def _check_side(self, side: dict, ds) -> None:
        known = [c for c in ds.users.columns if c != "id"]
        for key, value in side.items():
            loc = ("body", "side", key)
            if key not in known:
                raise RequestError(loc, f"unknown side information {key!r}; known: {known}")
            numeric = pd.api.types.is_numeric_dtype(ds.users[key])
            if value is None:
                continue
            if numeric and (isinstance(value, (bool, str)) or not np.isfinite(value)):
                raise RequestError(loc, f"side {key!r} must be a number, got {value!r}")
            if not numeric and not isinstance(value, str):
                raise RequestError(loc, f"side {key!r} must be a string, got {value!r}")

    def _new_user_id(self, ids: np.ndarray):
        if ids.dtype.kind in "iu":
            return int(ids.max(initial=0)) + 1
        taken = set(map(str, ids))
        n = len(ids)
        while f"u{n}" in taken:
            n += 1
        return f"u{n}"

    def snapshot(self, name: str | None = None) -> dict:
        """Write the served model (users, histories, states) into a new run directory, atomically: into
        a temporary directory beside it, renamed into place when complete."""
        if self.snapshot_dir is None:
            raise RequestError(("body",), "this service has no snapshot directory (start it with snapshot_dir=...)",
                               status=409)
        name = name or datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        if not SNAPSHOT_NAME.fullmatch(name):
            raise RequestError(("body", "name"), f"snapshot name must match {SNAPSHOT_NAME.pattern}, got {name!r}")
        with self._mutation:  # no writer meanwhile; readers go on
            target = self.snapshot_dir / name
            if target.exists():
                raise RequestError(("body", "name"), f"snapshot {name!r} exists already in {self.snapshot_dir}",
                                   status=409)
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.snapshot_dir, prefix=f".{name}.", suffix=".tmp"))
            model = self.model
            try:
                write_run(tmp, model, self.config)
                info = {"source": None if self.run_dir is None else str(self.run_dir),
                        "created": datetime.now(UTC).isoformat(timespec="seconds"),
                        "users": int(model.dataset.n_users), "interactions": len(model.history),
                        "events_applied": self.events_applied, "users_added": self.users_added}
                (tmp / "snapshot.json").write_text(json.dumps(info, indent=1) + "\n")
                os.chmod(tmp, 0o755)
                os.rename(tmp, target)
                _fsync_dir(self.snapshot_dir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return {"run": str(target), **info}


class _Job:
    """A validated event waiting in the queue: its (user, item, rating, ts) indices and the reply."""

    __slots__ = ("done", "error", "reply", "row")

    def __init__(self, row: tuple, reply: dict):
        self.row, self.reply, self.done, self.error = row, reply, False, None


def _steps_in_place(model: Recommender, user: int) -> bool:
    """Whether ``model.observe`` advances ``user`` by one cheap in-place step (a streaming recurrent
    hybrid and a user it was trained on); otherwise it re-encodes the history and runs on a copy."""
    trained = getattr(model, "trained_users", None)
    return getattr(model, "stream_state", None) is not None and trained is not None and bool(trained[user])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
