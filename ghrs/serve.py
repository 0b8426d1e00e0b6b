"""``python -m ghrs.serve run=<run dir> [host=127.0.0.1 port=8000]``: the HTTP JSON service (FastAPI).

Loads the run once and answers from memory (:class:`ghrs.service.RecommenderService`); the OpenAPI page
is at ``/docs``. :func:`create_app` builds the application from Python (tests, other servers).
Bad requests get a 4xx with FastAPI's error shape, ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``,
naming the field; they never change the served state.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Annotated

import hydra
import numpy as np
from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field

from ghrs.errors import UserError, user_errors
from ghrs.models.base import Recommender
from ghrs.paths import config_dir
from ghrs.service import RecommenderService, RequestError

CONFIG_DIR = config_dir()  # conf/ of the checkout, or the installed package data

Id = int | str  # raw ids as in the data (MovieLens: integers)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 422 naming it


class Recommendation(BaseModel):
    rank: int
    item: Id
    title: str
    score: float


class UserRecommendations(BaseModel):
    user: Id
    items: list[Recommendation]


class BatchRecommendRequest(Strict):
    users: list[Id] = Field(description="raw user ids")
    k: int = 10
    exclude_seen: bool = True


class BatchRecommendResponse(BaseModel):
    results: list[UserRecommendations]


class NewUserRequest(Strict):
    history: list[tuple[Id, float] | tuple[Id, float, Annotated[int, Field(ge=0, lt=2**62)]]] = Field(
        default_factory=list, description="[[item, rating], ...] or [[item, rating, unix seconds], ...]")
    side: dict[str, int | float | str | None] = Field(
        default_factory=dict, description="side information, e.g. {\"age\": 30, \"gender\": \"F\"}")


class NewUserResponse(BaseModel):
    user: Id
    interactions: int


class EventRequest(Strict):
    user: Id
    item: Id
    rating: float | None = Field(None, description="omitted: implicit, stored as the middle of the scale")
    ts: Annotated[int, Field(ge=0, lt=2**62)] | None = Field(
        None, description="unix seconds; omitted: one second after the newest interaction")


class EventResponse(BaseModel):
    user: Id
    item: Id
    rating: float
    ts: int
    position: int = Field(description="1-based position of this event in the user's history")


class Pair(Strict):
    user: Id
    item: Id


class PredictRequest(Strict):
    pairs: list[Pair]


class Prediction(BaseModel):
    user: Id
    item: Id
    rating: float


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class SnapshotRequest(Strict):
    name: str | None = Field(None, description="directory name under the snapshot dir (default: UTC time)")


class SnapshotResponse(BaseModel):
    run: str
    users: int
    interactions: int


def _error(status: int, loc: tuple, msg: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": [{"loc": list(loc), "msg": msg, "type": kind}]})


class RequestCounts:
    """Responses per route and status, and the service time (request in -> response head out) of the
    last ``keep`` responses per route, for ``/stats``; updated by :class:`CountRequests`."""

    def __init__(self, keep: int = 10_000) -> None:
        self._counts: Counter = Counter()
        self._seconds: dict[str, deque] = {}
        self._keep = keep
        self._lock = threading.Lock()

    def add(self, key: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counts[(key, status)] += 1
            self._seconds.setdefault(key, deque(maxlen=self._keep)).append(seconds)

    def as_dict(self) -> dict:
        with self._lock:
            out: dict = {}
            for (key, status), n in sorted(self._counts.items()):
                out.setdefault(key, {})[str(status)] = n
            latency = {key: {"n": len(v), "p50_ms": round(float(np.percentile(v, 50)) * 1000, 2),
                             "p99_ms": round(float(np.percentile(v, 99)) * 1000, 2)}
                       for key, v in sorted(self._seconds.items())}
            return {"counts": out, "service_time": latency}


class CountRequests:
    """ASGI middleware: counts every response by "METHOD /route" (unknown paths as "other") and status,
    and times it from the request's arrival to the response head."""

    def __init__(self, app, counts: RequestCounts, paths: set[str]):
        self.app, self.counts, self.paths = app, counts, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        key = f"{scope['method']} {scope['path'] if scope['path'] in self.paths else 'other'}"
        start = time.perf_counter()

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.counts.add(key, message["status"], time.perf_counter() - start)
            await send(message)

        return await self.app(scope, receive, counting_send)


def create_app(run_or_model: str | Path | Recommender | RecommenderService,
               snapshot_dir: str | Path | None = None) -> FastAPI:
    """The FastAPI application serving a run directory (or its ``model.safetensors``), a fitted model or a service."""
    if isinstance(run_or_model, RecommenderService):
        service = run_or_model
    elif isinstance(run_or_model, Recommender):
        service = RecommenderService(run_or_model, snapshot_dir=snapshot_dir)
    else:
        service = RecommenderService.from_run(run_or_model, snapshot_dir)
    app = FastAPI(title="ghrs recommender", version="1",
                  description="Top-k recommendations, rating predictions, new users and streamed events "
                              "from one trained run, held in memory.")
    app.state.service = service

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return _error(exc.status, exc.loc, exc.message, exc.kind)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):  # raised by the model layer
        return _error(422, ("body",), " ".join(str(exc).split()), "user_error")

    @app.exception_handler(KeyError)
    async def key_error(request: Request, exc: KeyError):  # the model layer's unknown ids
        return _error(404, ("body",), str(exc.args[0] if exc.args else exc), "unknown_id")

    @app.get("/recommend", response_model=UserRecommendations, summary="top-k items for one user")
    def recommend_one(user: Annotated[str, Query(description="raw user id")],
                      k: int = 10, exclude_seen: bool = True):
        return service.recommend([user], k, exclude_seen, query=True)[0]

    @app.post("/recommend", response_model=BatchRecommendResponse, summary="top-k items for many users")
    def recommend_many(req: BatchRecommendRequest):
        return {"results": service.recommend(req.users, req.k, req.exclude_seen)}

    @app.post("/users", response_model=NewUserResponse, status_code=201,
              summary="fold in a new user from ratings and/or side information (no retraining)")
    def add_user(req: NewUserRequest):
        return service.add_user([list(h) for h in req.history], req.side)

    @app.post("/events", response_model=EventResponse,
              summary="append one interaction and advance the user's state")
    def add_event(req: EventRequest):
        return service.add_event(req.user, req.item, req.rating, req.ts)

    @app.post("/predict", response_model=PredictResponse, summary="rating predictions for (user, item) pairs")
    def predict(req: PredictRequest):
        return {"predictions": service.predict([(p.user, p.item) for p in req.pairs])}

    @app.post("/snapshot", response_model=SnapshotResponse, status_code=201,
              summary="write the served state into a new run directory (atomically)")
    def snapshot(req: Annotated[SnapshotRequest | None, Body()] = None):
        return service.snapshot(req.name if req else None)

    @app.get("/healthz", summary="liveness")
    def healthz():
        return {"status": "ok"}

    @app.get("/stats", summary="users, items, model, encoder, request counts and service times")
    def stats():
        return service.stats() | {"uptime_s": round(time.time() - service.started, 1), **counts.as_dict()}

    counts = RequestCounts()
    app.add_middleware(CountRequests, counts=counts, paths={route.path for route in app.routes})
    return app


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
@user_errors
def main(cfg: DictConfig) -> None:
    import torch
    import uvicorn

    if OmegaConf.is_missing(cfg, "run"):
        raise UserError("give the run to serve: python -m ghrs.serve run=<training run dir or its model.safetensors>")
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    app = create_app(cfg.run, cfg.snapshot_dir)
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level=str(cfg.log_level),
                access_log=bool(cfg.access_log))


if __name__ == "__main__":
    main()
