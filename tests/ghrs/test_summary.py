import subprocess
import sys

import pandas as pd


def test_multirun_sweep_writes_a_summary_table(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "ghrs.train", "-m", "dataset=synthetic", "dataset.n_users=80", "dataset.n_items=50",
           "split=random", "model=bias,mf", "trainer.max_epochs=1", "seed=1,2", "trainer.progress=false",
           f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(sweep / "summary.csv")
    assert len(table) == 4 and table["rmse"].notna().all()
    assert table["fit_peak_mb"].ge(0).all()  # the run's memory above its starting RSS (tiny fits: ~0)
    assert table.loc[table["overrides"].str.contains("model=mf"), "epoch_s"].notna().all()
    stats = (sweep / "summary.md").read_text()
    assert "rmse_mean" in stats and "n_runs" in stats
