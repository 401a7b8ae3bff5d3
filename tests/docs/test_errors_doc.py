"""docs/errors.md lists exactly the exceptions of poolalloc.errors and the errno table."""

from __future__ import annotations

import errno
import inspect
import re
from pathlib import Path

from poolalloc import errors

PAGE = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
# A table row: | `ClassName` | `Base`, `Base` | `ERRNO` or - | when it is raised |
ROW = re.compile(r"^\|\s*`(?P<name>\w+)`\s*\|(?P<bases>[^|]*)\|\s*(?P<code>[^|]*?)\s*\|")


def documented() -> dict[str, tuple[str, str]]:
    """Class name -> (bases cell, errno cell) for each row of the table in errors.md."""
    rows = (ROW.match(line) for line in PAGE.read_text().splitlines())
    return {m["name"]: (m["bases"], m["code"].strip("` ")) for m in rows if m}


def exception_classes() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    }


def test_page_lists_exactly_the_exception_classes() -> None:
    assert set(documented()) == set(exception_classes())


def test_page_gives_each_errno_of_the_table() -> None:
    by_class = {cls.__name__: errno.errorcode[code] for code, cls in errors.ERRNO_TO_EXC.items()}
    table = documented()
    for name in exception_classes():
        assert table[name][1] == by_class.get(name, "-"), name


def test_page_gives_each_class_its_builtin_bases() -> None:
    for name, (bases_cell, _) in documented().items():
        cls = exception_classes()[name]
        named = set(re.findall(r"`(\w+)`", bases_cell))
        assert named == {base.__name__ for base in cls.__bases__}, name
