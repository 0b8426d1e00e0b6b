"""The README as a new user runs it: a fresh copy of the checkout (its tracked files only), ``ml-100k.zip``
dropped into that copy's ``data/`` folder, no ``GHRS_DATA_DIR``, nothing downloaded.

The "Running" block is parsed from README.md and run top to bottom with bash. To keep CI to a few minutes
on 2 cores, every ``python -m ghrs.train`` line gets ``trainer.max_epochs=1`` appended (the README says so);
everything else runs exactly as written, with ``<run>`` / ``outputs/<date>/<time>`` replaced by the run
directory that the latest ``ghrs.train`` line printed.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL = Path(os.environ.get("GHRS_DATA_DIR", ROOT.parent / "shared" / "data"))
REDUCED = "trainer.max_epochs=1"  # appended to each train command, for CI time only


def running_block() -> list[str]:
    """The commands of README.md's "Running" block, comments stripped."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^## Running\n.*?^```bash\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert block, "README.md has no ```bash block in its "## Running" section"
    commands = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines()]
    return [c for c in commands if c and not c.startswith("#")]


def tracked_copy(dest: Path) -> Path:
    """The checkout's tracked files (what a fresh clone holds) copied to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if not (REAL / "ml-100k.zip").exists():
        pytest.skip(f"real MovieLens not found at {REAL}")
    repo = tracked_copy(tmp_path_factory.mktemp("clone"))
    (repo / "data").mkdir(exist_ok=True)
    shutil.copy(REAL / "ml-100k.zip", repo / "data" / "ml-100k.zip")  # into the copy, never the repo
    return repo


def bash(command: str, cwd: Path, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GHRS_DATA_DIR"}
    env.update(PYTHONPATH=str(cwd), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_running_block_is_runnable_as_parsed():
    commands = running_block()
    assert commands[0].startswith("python -m ghrs.train") and len(commands) >= 5
    assert not any("GHRS_DATA_DIR" in c for c in commands)  # no environment variable needed


@pytest.mark.realdata
@pytest.mark.slow
def test_readme_running_block_top_to_bottom_in_a_fresh_clone(clone):
    run = first = None
    for command in running_block():
        if run is not None:
            command = command.replace("outputs/<date>/<time>", run).replace("<run>", run)
        assert "<" not in command, f"unresolved placeholder in {command!r}"
        if command.startswith("python -m ghrs.train"):
            command += f" {REDUCED}"
        result = bash(command, clone)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        assert "Traceback" not in result.stderr and "Warning" not in result.stderr, (command, result.stderr[-3000:])
        if command.startswith("python -m ghrs.train"):
            run = re.search(r"run dir: (\S+)", result.stdout).group(1)
            assert (clone / run / "recommendations.csv").is_file()
            first = first or run
    assert first is not None
    # the main job reports rating and top-k metrics
    assert {"rmse", "mae", "hr@10", "ndcg@10"} <= set(json.loads((clone / first / "metrics.json").read_text())["test"])
    run = first

    # a new user's mistakes on the same run: exit code 2, one line, no traceback
    for command, needle in [
        (f"python -m ghrs.recommend run={run} users=[1] k=0", "k must be"),
        (f"python -m ghrs.recommend run={run} users=[99999] side={{age:30,gender:F}}", "quote it"),
        (f"python -m ghrs.recommend run={run} users=[424242]", "unknown user id"),
        ("python -m ghrs.recommend run=outputs/nope users=[1]", "no such directory"),
        ("python -m ghrs.train model=bias encoder=mamba", "has no effect"),
        (f"python -m ghrs.evaluate run={run} split=random", "python -m ghrs.train"),
    ]:
        result = bash(command, clone)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and needle in errors[0], (command, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
