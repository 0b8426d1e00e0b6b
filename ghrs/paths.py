"""Where the project's files are, for a source checkout (editable install) and for an installed wheel.

- Hydra configs: ``conf/`` at the top of a checkout; inside an installed wheel it ships as the package
  data folder ``ghrs/conf`` (``pyproject.toml`` maps one onto the other).
- Data: the top-level ``data/`` folder of a checkout and ``./data`` under the working directory are
  searched for local MovieLens copies; downloads and remembered copies go into a cache directory.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def source_root() -> Path | None:
    """The checkout the package runs from (it has ``conf/`` next to ``ghrs/``), or None when installed."""
    root = _PACKAGE.parent
    return root if (root / "conf").is_dir() and (root / "pyproject.toml").is_file() else None


def config_dir() -> str:
    """Absolute path of the Hydra config folder (for ``@hydra.main(config_path=...)``)."""
    installed = _PACKAGE / "conf"
    if installed.is_dir():
        return str(installed)
    root = source_root()
    if root is None:
        raise FileNotFoundError(f"no Hydra config folder: neither {installed} nor a source checkout's conf/")
    return str(root / "conf")


def data_dirs() -> list[Path]:
    """Folders searched for local data copies: the checkout's ``data/``, then ``./data`` (deduplicated)."""
    dirs = []
    root = source_root()
    if root is not None:
        dirs.append(root / "data")
    dirs.append(Path.cwd() / "data")
    out: list[Path] = []
    for d in dirs:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def default_cache_dir() -> Path:
    """``GHRS_CACHE_DIR``; else the checkout's ``data/cache``; else ``$XDG_CACHE_HOME/ghrs`` (installed)."""
    env = os.environ.get("GHRS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    root = source_root()
    if root is not None:
        return root / "data" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ghrs"
