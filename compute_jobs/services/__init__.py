"""What runs on the nodes as a service of the cluster, not as a check: the Celery application the
workers and Flower load (``celery_app``), the authenticated network test server (``netserver``) and
the MPI programs mpirun starts (``mpi_jobs``). The checks drive them; users may import them too.
"""
