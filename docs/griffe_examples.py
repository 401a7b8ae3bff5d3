"""A griffe extension for the docs build: read ``Example:`` sections as doctest examples.

The project's docstrings say ``Example:`` (one example each); griffe's Google-style parser
knows only ``Examples:``, and would render the ``>>>`` lines as prose. Renaming the heading
before parsing makes them code blocks. Loaded by mkdocs.yml (mkdocstrings' ``extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    """Rewrites each docstring's ``Example:`` heading to ``Examples:``."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
