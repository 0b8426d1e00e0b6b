"""Tiny MovieLens-format releases written from synthetic data (no real MovieLens data needed)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ghrs.data.synthetic import GENRES, make_synthetic


def write_ml100k(folder: Path, n_users: int = 30, n_items: int = 25, seed: int = 0) -> Path:
    """Write ``folder/ml-100k/`` with u.data, u.user, u.item, u.genre, u1.base/u1.test."""
    ds = make_synthetic(n_users=n_users, n_items=n_items, ratings_per_user=8, seed=seed)
    root = folder / "ml-100k"
    root.mkdir(parents=True)
    r = ds.ratings.assign(user=ds.user_ids[ds.ratings.user], item=ds.item_ids[ds.ratings.item])
    lines = [f"{u}\t{i}\t{int(x)}\t{t}" for u, i, x, t in r[["user", "item", "rating", "timestamp"]].itertuples(index=False)]
    (root / "u.data").write_text("\n".join(lines) + "\n")
    test = r.iloc[::5]
    (root / "u1.test").write_text("\n".join(f"{u}\t{i}\t{int(x)}\t{t}" for u, i, x, t in test.itertuples(index=False)) + "\n")
    users = ds.users.assign(id=ds.user_ids)
    (root / "u.user").write_text("".join(f"{u.id}|{u.age}|{u.gender}|{u.occupation}|{u.zip}\n" for u in users.itertuples()))
    (root / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n")
    rows = []
    for iid, item in zip(ds.item_ids, ds.items.itertuples()):
        flags = "|".join("1" if g in item.genres.split("|") else "0" for g in GENRES)
        rows.append(f"{iid}|Caf\xe9 {iid} ({int(item.year)})|01-Jan-{int(item.year)}||http://x|{flags}\n")
    (root / "u.item").write_bytes("".join(rows).encode("latin-1"))
    return root


def write_ml1m(folder: Path, n_users: int = 30, n_items: int = 25, seed: int = 0) -> Path:
    """Write ``folder/ml-1m/`` with ratings.dat, users.dat, movies.dat in ML-1M's '::' format."""
    ds = make_synthetic(n_users=n_users, n_items=n_items, ratings_per_user=8, seed=seed)
    root = folder / "ml-1m"
    root.mkdir(parents=True)
    r = ds.ratings.assign(user=ds.user_ids[ds.ratings.user], item=ds.item_ids[ds.ratings.item])
    (root / "ratings.dat").write_text(
        "".join(f"{u}::{i}::{int(x)}::{t}\n" for u, i, x, t in r[["user", "item", "rating", "timestamp"]].itertuples(index=False)))
    (root / "users.dat").write_text(
        "".join(f"{uid}::{u.gender}::25::{k % 21}::{u.zip}\n" for k, (uid, u) in enumerate(zip(ds.user_ids, ds.users.itertuples()))))
    (root / "movies.dat").write_bytes("".join(
        f"{iid}::Caf\xe9: The Movie {iid} ({int(it.year)})::{it.genres}\n" for iid, it in zip(ds.item_ids, ds.items.itertuples())
    ).encode("latin-1"))
    return root


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, f.relative_to(folder.parent))
    return out


def write_ml20m_style(folder: Path, name: str = "ml-latest-small", n_users: int = 20, n_items: int = 15) -> Path:
    """Write ``folder/<name>/`` with ratings.csv and movies.csv (half-star ratings, quoted titles)."""
    ds = make_synthetic(n_users=n_users, n_items=n_items, ratings_per_user=6, seed=1)
    root = folder / name
    root.mkdir(parents=True)
    r = ds.ratings.assign(user=ds.user_ids[ds.ratings.user], item=ds.item_ids[ds.ratings.item])
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{x - 0.5},{t}\n" for u, i, x, t in r[["user", "item", "rating", "timestamp"]].itertuples(index=False)))
    (root / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f'{iid},"Movie, The {iid} ({int(it.year)})",{it.genres}\n' for iid, it in zip(ds.item_ids, ds.items.itertuples())))
    return root
