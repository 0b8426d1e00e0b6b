"""The four entry points (train, recommend, predict, evaluate) as a user calls them: every user mistake
exits with code 2 and one ``error:`` line naming the value and the fix, without a traceback; cheap
arguments fail before the model loads; evaluation files are named by protocol."""

import importlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from ghrs.errors import check_command_line
from ghrs.pipeline import RECOMMENDATIONS_FILE, run_training
from ghrs.serving import MODEL_FILE, load_run

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def call(module: str, *args: str, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run ``python -m ghrs.<module> args`` in this process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [f"ghrs/{module}.py", *args])
    entry = importlib.import_module(f"ghrs.{module}")
    code = 0
    try:
        check_command_line(module)
        entry.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(result, *needles):
    code, _, err = result
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A bias model trained on synthetic data with a cold-user split (reveal 0), as a run directory."""
    run_dir = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["dataset=synthetic", "model=bias", "split=cold_user", "trainer.progress=false"])
    run_training(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- dataset=synthetic\n- model=bias\n- split=cold_user\n")
    return run_dir


def test_train_writes_top_k_unseen_recommendations_with_titles(run):
    recs = pd.read_csv(run / RECOMMENDATIONS_FILE)
    assert list(recs.columns) == ["user", "rank", "item", "title", "score"]
    assert (recs.groupby("user").size() == 10).all() and recs["title"].notna().all()
    assert recs.groupby("user")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    model, _ = load_run(run)
    ds = model.dataset
    rated = set(zip(ds.user_ids[ds.ratings["user"]], ds.item_ids[ds.ratings["item"]]))
    assert not rated & set(zip(recs["user"], recs["item"]))  # nothing the user rated anywhere


@pytest.mark.parametrize("args, needles", [
    (["k=0"], ["k must be an integer >= 1", "k=10"]),
    (["k=ten"], ["k must be an integer"]),
    (["format=xml"], ["format=xml", "table|json|csv"]),
    (["users=[]"], ["users=[1,42]"]),
    (["users=[99999]"], ["unknown user id(s) [99999]", "history="]),
    (["users=[99999]", "side=age:30", "side=gender:F"], ["side must be a mapping", "quote it"]),
    (["users=[1]", "history=[[1]]"], ["history must be a list of [item, rating]"]),
    (["users=[99999]", "history=[[999999,5]]"], ["unknown item id(s)"]),
    (["users=[1,"], ["cannot parse the argument", "quote"]),
])
def test_recommend_user_errors(run, args, needles, monkeypatch, capsys):
    full = [f"run={run}", "users=[1]", *args] if not any(a.startswith("users") for a in args) else [f"run={run}", *args]
    assert_user_error(call("recommend", *full, monkeypatch=monkeypatch, capsys=capsys), *needles)


@pytest.mark.parametrize("args, needles", [
    ([], ["run= is required"]),
    (["run=/no/such/run"], ["run=/no/such/run", "no such directory"]),
])
def test_run_dir_errors_in_every_entry_point(args, needles, tmp_path, monkeypatch, capsys):
    for module, extra in [("recommend", ["users=[1]"]), ("predict", ["pairs=p.csv", "out=o.csv"]),
                          ("evaluate", [])]:
        assert_user_error(call(module, *args, *extra, monkeypatch=monkeypatch, capsys=capsys), *needles)


def test_a_directory_without_a_model_is_named(tmp_path, monkeypatch, capsys):
    assert_user_error(call("recommend", f"run={tmp_path}", "users=[1]", monkeypatch=monkeypatch, capsys=capsys),
                      f"no {MODEL_FILE}", "outputs/<date>/<time>")


def test_cheap_arguments_fail_before_the_model_loads(run, monkeypatch, capsys):
    import ghrs.recommend

    def boom(*_):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(ghrs.recommend, "load_run", boom)
    assert_user_error(call("recommend", f"run={run}", "users=[1]", "k=0", monkeypatch=monkeypatch, capsys=capsys))


def test_recommend_and_predict_work(run, tmp_path, monkeypatch, capsys):
    code, out, err = call("recommend", f"run={run}", "users=[1,2]", "k=3", "format=csv",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert len(pd.read_csv(pd.io.common.StringIO(out))) == 6
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user,item\n1,1\n2,3\n")
    code, out, err = call("predict", f"run={run}", f"pairs={pairs}", f"out={tmp_path / 'p.csv'}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and len(pd.read_csv(tmp_path / "p.csv")) == 2, err
    assert_user_error(call("predict", f"run={run}", f"pairs={pairs}", f"out={tmp_path / 'no' / 'p.csv'}",
                           monkeypatch=monkeypatch, capsys=capsys), "does not exist")
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,1\n424242,3\n")
    assert_user_error(call("predict", f"run={run}", f"pairs={bad}", f"out={tmp_path / 'p.csv'}",
                           monkeypatch=monkeypatch, capsys=capsys), "unknown")


def test_evaluate_names_the_training_command_and_writes_one_file_per_protocol(run, monkeypatch, capsys):
    # the run held out 10% of users with reveal 0: reveal 3 of the same users is a fair protocol ...
    for reveal in (0, 3):
        code, _, err = call("evaluate", f"run={run}", "split=cold_user", f"split.reveal={reveal}",
                              monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0, err
    files = sorted(p.name for p in run.glob("metrics_*.json"))
    assert files == ["metrics_cold_user_0.1_k0.json", "metrics_cold_user_0.1_k3.json"]
    assert json.loads((run / files[1]).read_text())["split"] == "cold_user:0.1:k3"
    # ... the official/random protocols test ratings this run was trained on: refused, with the command
    result = call("evaluate", f"run={run}", "split=random", monkeypatch=monkeypatch, capsys=capsys)
    assert_user_error(result, "would leak",
                      "python -m ghrs.train dataset=synthetic model=bias split=random")


@pytest.mark.parametrize("args, needles", [
    (["model=bias", "encoder=mamba"], ["'encoder=mamba' has no effect", "model=hybrid encoder=mamba"]),
    (["model=mf", "encoder=gru", "encoder.d_model=8"], ["has no effect"]),
    (["trainer.lr=-1"], ["trainer", "lr > 0"]),
    (["split=cold_user", "split.holdout_ratio=2"], ["split.holdout_ratio must be in (0, 1)"]),
    (["encoder=s4d", "encoder.d_model=0"], ["encoder: d_model"]),
    (["model.dim=2"], ["model: hybrid: dim >= 4"]),
    (["dataset=csv"], ["dataset"]),
    (["model=foo"], ["Could not find 'model/foo'", "hybrid"]),
    (["trainer.foo=1"], ["Could not override 'trainer.foo'", "+trainer.foo=1"]),
])
def test_train_user_errors(args, needles, tmp_path, monkeypatch, capsys):
    result = call("train", "dataset=synthetic", *args, f"hydra.run.dir={tmp_path}", monkeypatch=monkeypatch,
                  capsys=capsys)
    assert_user_error(result, *needles)


def test_a_split_that_cannot_be_made_is_a_user_error(tmp_path, monkeypatch, capsys):
    one = tmp_path / "one.csv"
    one.write_text("user,item,rating\n1,2,4\n")
    for split, needle in [("official", "no predefined fold"), ("random", "leaves no test ratings")]:
        result = call("train", "dataset=csv", f"dataset.ratings={one}", f"split={split}", "model=bias",
                      f"hydra.run.dir={tmp_path / split}", monkeypatch=monkeypatch, capsys=capsys)
        assert_user_error(result, needle)


def test_a_bug_keeps_its_traceback(run, monkeypatch, capsys):
    import ghrs.recommend

    def bug(*_):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ghrs.recommend, "recommend", bug)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["ghrs/recommend.py", f"run={run}", "users=[1]"])
    with pytest.raises(ZeroDivisionError):
        ghrs.recommend.main()
