"""Loaded by Python at start-up when ``tracebridge run`` put this folder on PYTHONPATH.

Configures and instruments before the application's first line runs, then hands over to any
``sitecustomize`` the environment had before us, so we never hide someone else's.
"""

from __future__ import annotations


def _bootstrap() -> None:
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        from tracebridge.instrument.launcher import auto_instrument

        auto_instrument()
    except Exception as error:  # tracing must never stop the application from starting
        print(f"tracebridge: auto-instrumentation failed, running untraced: {error!r}", file=sys.stderr)
    # Chain to the next sitecustomize on the path, if any.
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_tracebridge_chained_sitecustomize", candidate)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            break


_bootstrap()
