"""Checks of entry-point arguments that need no model (run dirs, files, choices), so that a mistake fails
fast, before a model loads, as a :class:`~ghrs.errors.ConfigError` naming the value and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ghrs.errors import ConfigError
from ghrs.serving import MODEL_FILE, model_file

RUN_EXAMPLE = "run=outputs/<date>/<time> (the directory python -m ghrs.train printed as 'run dir')"


def required(cfg: DictConfig, key: str, example: str) -> Any:
    """``cfg[key]`` as a plain value; a missing mandatory value (``???``) is an error showing ``example``."""
    if OmegaConf.is_missing(cfg, key) or cfg.get(key) is None:
        raise ConfigError(f"{key}= is required: e.g. {example}")
    return plain(cfg[key])


def plain(value: Any) -> Any:
    """OmegaConf containers as plain lists / dicts; other values unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def run_file(run: Any) -> Path:
    """The model file of a training run given as its directory or as the file itself."""
    path = Path(str(run)).expanduser()
    if not path.exists():
        raise ConfigError(f"run={run}: no such directory; pass a training run directory, e.g. {RUN_EXAMPLE}")
    file = model_file(path)  # an older run's pickled model.pt is refused there, with the fix
    if not file.is_file():
        raise ConfigError(f"run={run}: no {MODEL_FILE} in it (an unfinished or non-training run?); pass a "
                          f"finished training run directory, e.g. {RUN_EXAMPLE}")
    return file


def input_file(value: Any, key: str) -> Path:
    """An existing file named by argument ``key``."""
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}={value}: no such file; give the path of an existing CSV file")
    return path


def output_file(value: Any, key: str) -> Path:
    """A file to write, whose directory must exist."""
    path = Path(str(value)).expanduser()
    if path.is_dir():
        raise ConfigError(f"{key}={value} is a directory; give a file name, e.g. {key}={path / 'out.csv'}")
    if not path.parent.is_dir():
        raise ConfigError(f"{key}={value}: directory {path.parent} does not exist; create it or write elsewhere")
    return path


def choice(value: Any, key: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ConfigError(f"{key}={value} is not one of {'|'.join(options)}: e.g. {key}={options[0]}")
    return value


def id_list(value: Any, key: str) -> list:
    """A list of raw ids (one id alone is a list of one)."""
    ids = value if isinstance(value, list) else [value]
    bad = [v for v in ids if isinstance(v, (list, dict, bool, float)) or v is None]
    if bad or not ids:
        raise ConfigError(f"{key}={value!r}: give ids as a list of integers or strings, e.g. {key}=[1,42]")
    return ids
