"""Before compiling anything: is there a C compiler, and are Python's headers installed?

Without this check a missing compiler or a missing ``Python.h`` surfaces as a page of
setuptools output ending in ``error: command 'gcc' failed`` or ``fatal error: Python.h: No such
file or directory``. :func:`toolchain_problem` compiles one tiny file the way the real build
will (same compiler command, same include directory) and turns a failure into one paragraph
that says what to install.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

INSTALL_HINT = (
    "On Debian or Ubuntu: `apt-get install gcc python3-dev` (for a Python from deadsnakes, "
    "python3.X-dev); on Fedora or RHEL: `dnf install gcc python3-devel`; on Alpine: "
    "`apk add gcc musl-dev python3-dev`."
)


def compiler_command() -> list[str]:
    """The C compiler the build will run: ``$CC`` if set, else the one Python was built with."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def python_include_dir() -> str:
    """Where this interpreter's ``Python.h`` should be."""
    return sysconfig.get_paths()["include"]


def toolchain_problem(cc: list[str] | None = None, include_dir: str | None = None) -> str | None:
    """``None`` when ``cc`` compiles a file that includes ``Python.h``; else what to install."""
    cc = cc if cc is not None else compiler_command()
    include_dir = include_dir if include_dir is not None else python_include_dir()
    py = f"Python {sys.version_info[0]}.{sys.version_info[1]}"
    if not cc or shutil.which(cc[0]) is None:
        return (
            f"poolalloc: cannot build: no C compiler found (looked for {' '.join(cc)!r}, from "
            f"$CC or the compiler {py} was built with). poolalloc compiles its C core at "
            f"install time, so it needs a C compiler and {py}'s development headers. "
            f"{INSTALL_HINT} Or set CC to a C compiler, or install a prebuilt wheel "
            "(`make wheel` on a machine with a compiler, then `pip install dist/*.whl`)."
        )
    if not Path(include_dir, "Python.h").is_file():
        return (
            f"poolalloc: cannot build: {py}'s development headers are missing (no Python.h in "
            f"{include_dir}). poolalloc compiles a CPython extension at install time and needs "
            f"them. {INSTALL_HINT} Or install a prebuilt wheel (`make wheel` on a machine with "
            "the headers, then `pip install dist/*.whl`)."
        )
    with tempfile.TemporaryDirectory(prefix="poolalloc-cc-") as tmp:
        src = Path(tmp, "probe.c")
        src.write_text("#include <Python.h>\nint probe(void) { return Py_IsInitialized(); }\n")
        cmd = [*cc, f"-I{include_dir}", "-c", str(src), "-o", str(Path(tmp, "probe.o"))]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            output, failed = str(exc), True
        else:
            output, failed = (run.stderr or run.stdout).strip(), run.returncode != 0
    if failed:
        first = output.splitlines()[0] if output else "no output"
        return (
            f"poolalloc: cannot build: the C compiler {' '.join(cc)!r} could not compile a file "
            f"that includes Python.h ({first}). poolalloc needs a working C compiler and "
            f"{py}'s development headers. {INSTALL_HINT}"
        )
    return None
