"""Instrumenting a library when the application first imports it, not before.

Importing every installed library to instrument it costs a service the memory of all of them:
under ``tracebridge run`` an eshop service that uses FastAPI, httpx and aiokafka also loaded
Flask, requests, aiohttp, kafka-python, confluent-kafka and FastStream — 42 MB more resident at
start.  Instead each instrumentation is armed on its library's module and runs right after
that module's first import completes, which is still before the importing statement binds
any name from it (``from confluent_kafka import Producer`` gets the traced class).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable

from wrapt import register_post_import_hook

logger = logging.getLogger("tracebridge")

_armed: set[str] = set()


def is_installed(module: str) -> bool:
    """Whether a module can be imported, without importing it (only its parent packages)."""
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def when_imported(modules: Iterable[str], key: str, action: Callable[[], bool]) -> bool | None:
    """Run ``action`` once: now if one of ``modules`` is imported already (its result is
    returned), else right after the first of them is (``None`` is returned: armed).  ``key``
    names it for :func:`disarm`.  A failing action is logged, never raised into the
    application's import."""
    outcome: list[bool] = []

    def fire(_module: object) -> None:
        if key not in _armed:  # disarmed, or one of the other modules fired first
            return
        _armed.discard(key)
        try:
            outcome.append(bool(action()))
        except Exception as error:
            logger.warning("tracebridge: could not instrument %s: %s", key, error)
            outcome.append(False)

    _armed.add(key)
    for module in modules:
        register_post_import_hook(fire, module)  # calls fire at once if already imported
    return outcome[0] if outcome else None


def disarm() -> None:
    """Forget every instrumentation still waiting for its import (``uninstrument()``)."""
    _armed.clear()


def armed() -> frozenset[str]:
    """What is still waiting for its library to be imported."""
    return frozenset(_armed)
