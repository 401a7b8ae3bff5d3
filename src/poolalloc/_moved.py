"""Module paths that moved when the package took its layered layout, kept as aliases.

``import poolalloc.net.reactor`` still works: a finder at the end of ``sys.meta_path`` answers
the old names in :data:`MOVED` with a stand-in module whose attributes come from the new module,
each first use warning with a :class:`DeprecationWarning` that names the new path. Nothing is
loaded until an old name is imported; the finder never answers any other name.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     from poolalloc.core import SlabPool
    >>> SlabPool.__module__, caught[0].category.__name__
    ('poolalloc.slab', 'DeprecationWarning')
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence

__all__ = ["MOVED", "install"]

#: old module path -> the module that holds its names now
MOVED = {
    "poolalloc.core": "poolalloc.slab",
    "poolalloc.loadgen": "poolalloc.cli.loadgen",
    "poolalloc.net.baseline": "poolalloc.cli.baseline",
    "poolalloc.net.connection": "poolalloc.net.epoll.connection",
    "poolalloc.net.httpparse": "poolalloc.net.http.parser",
    "poolalloc.net.httpproto": "poolalloc.net.http.protocol",
    "poolalloc.net.reactor": "poolalloc.net.epoll.reactor",
    "poolalloc.net.serve": "poolalloc.net.http.serve",
    "poolalloc.net.server": "poolalloc.net.epoll.server",
    "poolalloc.net.uring_conn": "poolalloc.net.uring.connection",
    "poolalloc.net.uring_server": "poolalloc.net.uring.server",
}


class _MovedModule(types.ModuleType):
    """Stands for an old module path; every attribute comes from the new module."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        target = MOVED[self.__name__]
        value = getattr(importlib.import_module(target), name)  # AttributeError: no such name
        warnings.warn(
            f"{self.__name__} moved to {target}: import {name} from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return value


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _MovedModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install() -> None:
    """Answer the old paths (once per process; ``import poolalloc`` calls it)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
