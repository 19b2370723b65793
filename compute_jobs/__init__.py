"""clusterforge verification checks: run on the nodes, prove the cluster computes correctly.

Import-time dependencies are the standard library and numpy only; engine libraries (dask, pyspark,
celery, mpi4py, cupy, numba, pyopencl) are imported inside the checks that need them.
"""

__version__ = "0.1.0"
