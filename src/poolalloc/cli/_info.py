"""``poolalloc info``: what this machine and this build give poolalloc, section by section.

Each section is computed on its own and degrades to a one-line reason: a missing module, a
kernel file that does not exist or a refused probe never stops the report. Values are what a
program reads (``--json``): booleans, numbers (sizes in bytes, counts), lists, and ``None`` for
"no limit"; :func:`render` words them for people.
"""

from __future__ import annotations

import importlib
import platform
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import poolalloc

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")

Section = dict[str, Any]


def version() -> Section:
    return {
        "poolalloc": poolalloc.__version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
    }


def build() -> Section:
    try:
        info = importlib.import_module("poolalloc._build_info")
    except ImportError:
        return {"unknown": "no poolalloc/_build_info.py: not built by setup.py"}
    return {
        "compiler": getattr(info, "CC", "?"),
        "compile args": list(getattr(info, "COMPILE_ARGS", [])),
        "link args": list(getattr(info, "LINK_ARGS", [])),
    }


def size_classes() -> Section:
    core = importlib.import_module("poolalloc.slab")
    classes = [(int(block), int(slab)) for block, slab in core.size_classes()]
    return {
        "count": len(classes),
        "block bytes": [block for block, _ in classes],
        "largest": classes[-1][0],
    }


def numa() -> Section:
    module = importlib.import_module("poolalloc.numa")
    info = module.available()
    section: Section = {"source": info.source, "nodes": info.node_count}
    for node in module.topology().nodes:
        section[f"node {node.id}"] = {"cpus": len(node.cpus), "memory bytes": node.memory_total}
    section["note"] = info.note
    return section


_FEAT_REG_REG_RING = 1 << 13  # IORING_FEAT_REG_REG_RING: io_uring_enter by a registered ring fd


def io_uring() -> Section:
    uring = importlib.import_module("poolalloc.net.uring.proactor")
    ok, reason = uring.available()
    engine, why = importlib.import_module("poolalloc.net.http.serve").auto_engine()
    section: Section = {"available": bool(ok), "reason": reason}
    if ok:
        features = uring.probe_result().features
        section["registered ring fd"] = bool(features & _FEAT_REG_REG_RING)
    section["serve --engine auto"] = {"engine": engine, "why": why}
    return section


def memlock() -> Section:
    def limit(value: int) -> int | None:
        return None if value == resource.RLIM_INFINITY else value  # None: unlimited

    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return {"soft": limit(soft), "hard": limit(hard)}


def huge_pages() -> Section:
    try:
        modes = THP_ENABLED.read_text().split()
    except OSError as exc:
        return {"transparent huge pages": f"unknown ({exc.strerror})"}
    chosen = next((m.strip("[]") for m in modes if m.startswith("[")), " ".join(modes))
    return {"transparent huge pages": chosen, "choices": [m.strip("[]") for m in modes]}


SECTIONS: dict[str, Callable[[], Section]] = {
    "version": version,
    "build": build,
    "size classes": size_classes,
    "NUMA": numa,
    "io_uring": io_uring,
    "memlock limit": memlock,
    "huge pages": huge_pages,
}


def collect() -> dict[str, Section]:
    """Every section; a section that cannot be computed says why instead."""
    report: dict[str, Section] = {}
    for name, compute in SECTIONS.items():
        try:
            report[name] = compute()
        except ImportError as exc:
            report[name] = {"unavailable": f"module {exc.name or exc} is not in this build"}
        except Exception as exc:  # one broken probe must not hide the other sections
            report[name] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    return report


def _words(section: str, key: str, value: Any) -> str:
    """One value as a person reads it."""
    if section == "io_uring" and key == "available" and not value:
        return "no (epoll is used instead)"
    if section == "size classes" and key == "largest":
        return f"{value} B; larger requests get their own mapping"
    if section == "memlock limit":
        return "unlimited" if value is None else f"{value // 1024} KiB"
    if section == "NUMA" and isinstance(value, dict):
        cpus = f"{value['cpus']} CPUs" if value["cpus"] else "no CPUs"
        return f"{cpus}, {value['memory bytes'] / 2**30:.1f} GiB"
    if key == "serve --engine auto":
        return f"{value['engine']}: {value['why']}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return (", " if section == "size classes" else " ").join(str(v) for v in value)
    return str(value)


def render(report: dict[str, Section]) -> str:
    """The report as aligned ``key: value`` lines under one heading per section."""
    lines: list[str] = []
    for name, section in report.items():
        lines.append(f"{name}:")
        shown = {key: _words(name, key, value) for key, value in section.items()}
        width = max((len(key) for key in shown), default=0)
        lines += [f"  {key.ljust(width)}  {value}" for key, value in shown.items()]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - manual use
    sys.stdout.write(render(collect()) + "\n")
