"""CPU thread limits for every thread pool a run uses, not only torch's.

``torch.set_num_threads`` sets torch's intra-op pool only. numpy/scipy's OpenBLAS (FID's matrix square root,
PixelSNAIL-free numpy work) and scikit-learn's OpenMP (the linear probes) keep one thread per core, so on a shared
machine two 1-thread grid cells still start 2 x (cores) BLAS/OpenMP threads in their probes and FID statistics:
the oversubscription that makes a 2-core machine several times slower. :func:`limit_threads` caps them all.
"""

from __future__ import annotations

import os

import torch

#: read by OpenBLAS / MKL / OpenMP when they are loaded: covers the libraries imported after the call
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(n: int) -> None:
    """Use at most ``n`` threads in torch, in the BLAS libraries numpy/scipy load and in OpenMP runtimes."""
    from threadpoolctl import threadpool_limits

    n = int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    for var in THREAD_ENV:  # libraries loaded later (scikit-learn's OpenMP is loaded with sklearn)
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    threadpool_limits(limits=n)  # the libraries already loaded; process-wide and lasting
