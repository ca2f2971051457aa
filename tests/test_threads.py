"""dmz.threads.limit_threads caps torch, BLAS and OpenMP pools, including libraries loaded after the call."""

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
{limit}
import numpy, scipy.linalg, sklearn.linear_model, threadpoolctl, torch
pools = threadpoolctl.threadpool_info()
print(torch.get_num_threads(), max(p["num_threads"] for p in pools), len(pools))
"""


def _pools(limit: str) -> tuple[int, int, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                             "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE.format(limit=limit)], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return tuple(int(v) for v in out.stdout.split())


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every pool has one thread anyway")
def test_limit_threads_caps_every_pool_including_later_imports():
    torch_n, pool_max, n_pools = _pools("")
    assert pool_max >= 2 and n_pools >= 2  # the control: BLAS / OpenMP default to one thread per core
    torch_n, pool_max, n_pools = _pools("import torch\nfrom dmz.threads import limit_threads\nlimit_threads(1)")
    assert (torch_n, pool_max) == (1, 1) and n_pools >= 2  # sklearn's OpenMP loaded after the call is capped too


def test_limit_threads_rejects_zero():
    from dmz.threads import limit_threads

    with pytest.raises(ValueError, match=">= 1"):
        limit_threads(0)
