"""Build the optional compiled scanner; all package metadata lives in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and treason falls
back to the reference engine (``treason.engine.compiled.available()`` is then False).
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Turn any failure to compile the scanner into a warning instead of a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: fall back
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc: Exception) -> None:
        print(
            f"warning: treason's compiled scanner was not built ({exc}); "
            "scans will use the slower reference engine",
            file=sys.stderr,
        )


setup(
    ext_modules=[
        Extension(
            "treason._fastscan",
            sources=["src/treason/_fastscan.c"],
            extra_compile_args=["-O3", "-std=gnu11"],
            optional=True,
        ),
        Extension(
            "treason._logscan",
            sources=["src/treason/_logscan.c"],
            extra_compile_args=["-O3", "-std=gnu11"],
            optional=True,
        ),
        Extension(
            "treason._ktrace",
            sources=["src/treason/_ktrace.c"],
            extra_compile_args=["-O2", "-std=gnu11"],
            optional=True,
        ),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
