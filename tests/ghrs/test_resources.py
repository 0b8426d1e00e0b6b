import numpy as np
import pytest

from ghrs.resources import PeakMemory, RunMemory, current_rss_mb


@pytest.mark.skipif(current_rss_mb() is None, reason="needs /proc/self/statm (Linux)")
def test_peak_memory_sees_a_temporary_allocation():
    with PeakMemory(interval_s=0.005) as outer, PeakMemory(interval_s=0.005) as m:
        x = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        x += 1
        del x
    assert m.delta_mb > 200  # freed before the block ended, still seen as the peak
    assert outer.peak_mb >= m.peak_mb - 1


@pytest.mark.skipif(current_rss_mb() is None, reason="needs /proc/self/statm (Linux)")
def test_run_memory_excludes_what_the_process_held_before_the_run():
    ballast = np.ones(400 * 2**20 // 8)  # an earlier multirun job's leftovers, still resident
    ballast += 1
    run = RunMemory(interval_s=0.005)
    with run.stage("fit"):
        x = np.ones(100 * 2**20 // 8)
        x += 1
    del x
    assert 80 < run.stage_mb["fit"] < 250  # this run's 100 MiB, not the 400 MiB before it
    assert run.peak_mb >= run.base_mb + run.stage_mb["fit"] - 1 and run.base_mb > 400
    del ballast


@pytest.mark.skipif(current_rss_mb() is None, reason="needs /proc/self/statm (Linux)")
def test_stage_peak_mb_is_per_run_inside_one_process(tmp_path):
    from hydra import compose, initialize_config_dir

    from ghrs.paths import config_dir
    from ghrs.pipeline import run_training

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=synthetic", "split=random", "model=bias"])
    first = run_training(cfg, tmp_path / "a")
    ballast = np.ones(500 * 2**20 // 8)  # what a first job of a multirun might leave resident
    ballast += 1
    second = run_training(cfg, tmp_path / "b")
    del ballast
    assert second["base_rss_mb"] > first["base_rss_mb"] + 400
    for name in ("load", "fit", "evaluate"):  # the same job measures the same, give or take allocator noise
        assert abs(second["stage_peak_mb"][name] - first["stage_peak_mb"][name]) < 150, name
