"""The one compiled part: the collector's span scanner (optional — without a C compiler the
collector builds its rows in Python, the same rows, ~6x slower).  Everything else about the
distribution is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tracebridge.collector._span_scan",
            ["src/tracebridge/collector/_span_scan.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
