"""Built-in checks, one module per family (node, net, later dask, spark, mpi, celery, airflow, gpu...).

Every module in this package is imported by :func:`load_all`; its ``@register`` decorators add the
checks to the registry. Modules import engine libraries lazily, inside ``run``, so loading all of
them stays cheap on nodes without those engines. A module that fails to import is recorded in
``registry.import_errors`` and reported as an ERROR result instead of stopping the run.
"""

from __future__ import annotations

import importlib
import pkgutil

from compute_jobs.model import Registry, registry

_loaded = False


def load_all(target: Registry = registry) -> Registry:
    global _loaded
    if not _loaded:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            module = f"{__name__}.{info.name}"
            try:
                importlib.import_module(module)
            except Exception as exc:
                target.import_errors[module] = f"{type(exc).__name__}: {exc}"
        _loaded = True
    return target
