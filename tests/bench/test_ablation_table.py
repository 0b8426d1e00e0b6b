"""bench/ablation_table.py: runs are grouped by their ablation override (or a LABEL=DIR argument), and a
component pays only when its gain exceeds 2 x the larger seed std."""

import json
from pathlib import Path

from tests.bench import load_bench


def fake_run(path: Path, overrides: list[str], valid: float, test: float) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / "metrics.json").write_text(json.dumps({"valid": {"hr@10": valid}, "test": {"hr@10": test}, "epochs": 3}))


def test_labels_and_verdicts(tmp_path):
    bench = load_bench("ablation_table")
    for s, (full, side, cc) in enumerate([(0.20, 0.10, 0.199), (0.21, 0.11, 0.205), (0.19, 0.09, 0.196)]):
        fake_run(tmp_path / "other" / str(s), ["+experiment=topk", f"seed={s}"], full, full)  # no ablation override
        fake_run(tmp_path / "sweep" / f"side{s}", ["ablation=no_side", f"seed={s}"], side, side)
        fake_run(tmp_path / "sweep" / f"cc{s}", ["ablation=no_codes_clusters", f"seed={s}"], cc, cc)
    runs = bench.collect([str(tmp_path / "sweep"), f"full={tmp_path / 'other'}"])
    assert sorted(runs["ablation"].unique()) == ["full", "no_codes_clusters", "no_side"]
    assert (runs["ablation"] == "full").sum() == 3
    lines = bench.table(runs, "hr@10").splitlines()
    side = next(line for line in lines if line.startswith("| no side"))
    cc = next(line for line in lines if line.startswith("| no codes clusters"))
    assert "+0.1000" in side and "| yes |" in side          # gain 0.10 > 2 x std 0.01
    assert "| no |" in cc                                     # gain 0.0 is within the noise
    # without the label the reused runs would be filed as "full" too, but a sweep of ablations keeps its names
    assert set(bench.collect([str(tmp_path / "sweep")])["ablation"]) == {"no_side", "no_codes_clusters"}


def test_stacked_bases_ablation_over_seeds():
    bench = load_bench("rating_bases")

    def run(off):
        v = {"ghrs+autorec+knn": 0.877, "autorec+knn": 0.880, "ghrs+knn": 0.890, "ghrs+autorec": 0.8771}
        return {"rows": [{"what": f"support blend of {k}", "valid": x + off, "oof": 0.0} for k, x in v.items()]
                + [{"what": "linear blend of ghrs+autorec+knn", "valid": 0.5, "oof": 0.0}]}

    lines = bench.ablation_table([run(0.0), run(0.001), run(-0.001)], "support").splitlines()
    assert lines[2].startswith("| all: ghrs+autorec+knn | 3 | 0.8770 ± 0.0010")
    verdict = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in lines[3:]}
    assert verdict == {"without ghrs": "yes", "without autorec": "yes", "without knn": "no"}
