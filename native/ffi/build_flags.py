"""Compiler flags shared by every extension of poolalloc (the cffi core and the lease type).

Environment:
    PA_WERROR=1    add -Werror (CI sets it)
    PA_SANITIZE=1  build with AddressSanitizer and UBSan (``make test-asan``)
    PA_DEBUG_BUILD=1  -O0 -g3 and internal assertions
"""

from __future__ import annotations

import os


def _on(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def compile_args() -> list[str]:
    """Flags for every C file of the project."""
    args = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-fvisibility=hidden"]
    args += ["-O0", "-g3", "-DPA_DEBUG=1"] if _on("PA_DEBUG_BUILD") else ["-O2", "-g"]
    if _on("PA_WERROR"):
        args.append("-Werror")
    if _on("PA_SANITIZE"):
        args += [
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer",
            "-DPA_TRACK_ASAN=1",
        ]
    return args


def link_args() -> list[str]:
    """Flags for linking every extension."""
    args = ["-pthread"]
    if _on("PA_SANITIZE"):
        args += ["-fsanitize=address,undefined"]
    return args
