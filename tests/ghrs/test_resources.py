import numpy as np
import pytest

from ghrs.resources import PeakMemory, current_rss_mb


@pytest.mark.skipif(current_rss_mb() is None, reason="needs /proc/self/statm (Linux)")
def test_peak_memory_sees_a_temporary_allocation():
    with PeakMemory(interval_s=0.005) as outer, PeakMemory(interval_s=0.005) as m:
        x = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        x += 1
        del x
    assert m.delta_mb > 200  # freed before the block ended, still seen as the peak
    assert outer.peak_mb >= m.peak_mb - 1
