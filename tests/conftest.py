"""Shared test settings: small, single-threaded, deterministic."""

import os

# Two cores and several test processes: keep BLAS/torch to one thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
