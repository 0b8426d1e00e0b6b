import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ghrs import paths

ROOT = Path(__file__).resolve().parents[2]


def test_checkout_layout(tmp_path, monkeypatch):
    assert paths.source_root() == ROOT and paths.config_dir() == str(ROOT / "conf")
    monkeypatch.chdir(tmp_path)
    assert paths.data_dirs() == [ROOT / "data", tmp_path / "data"]
    monkeypatch.setenv("GHRS_CACHE_DIR", str(tmp_path / "c"))
    assert paths.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GHRS_CACHE_DIR")
    assert paths.default_cache_dir() == ROOT / "data" / "cache"


@pytest.mark.slow
def test_non_editable_install_trains_from_any_directory(tmp_path):
    """Build a wheel from a copy of the sources, install it into a bare target dir, run the entry point
    from an unrelated directory: Hydra must find conf/ as package data."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("ghrs", "ssm", "kernels", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GHRS_DATA_DIR")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "whl")],
                   check=True, env=env, cwd=tmp_path)
    (wheel,) = (tmp_path / "whl").glob("*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
                   check=True, env=env, cwd=tmp_path)
    assert (target / "ghrs" / "conf" / "train.yaml").is_file() and not (target / "conf").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.update(PYTHONPATH=str(target), GHRS_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", "import ghrs, ghrs.paths as p; print(ghrs.__file__); print(p.config_dir())"],
                         check=True, env=env, cwd=elsewhere, capture_output=True, text=True).stdout.split()
    assert out == [str(target / "ghrs" / "__init__.py"), str(target / "ghrs" / "conf")]
    run = subprocess.run([sys.executable, "-m", "ghrs.train", "dataset=synthetic", "split=random", "model=bias",
                          f"hydra.run.dir={elsewhere / 'run'}"], check=False, env=env, cwd=elsewhere, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (elsewhere / "run" / "metrics.json").is_file()
