"""Every setting poolalloc reads from the environment, in one place (all named ``POOLALLOC_*``).

The table :data:`SETTINGS` is the whole list; ``docs/guide/settings.md`` shows it. The rest of
the package reads the environment only through :func:`value` and :func:`flag`, so an old name
is honoured everywhere the same way: its value is used (translated to the new scheme) with a
:class:`DeprecationWarning` naming the new variable, and the new name wins when both are set.

Example:
    >>> from poolalloc import settings
    >>> sorted(settings.SETTINGS)
    ['POOLALLOC_DEBUG', 'POOLALLOC_LEAKS', 'POOLALLOC_TRACEBACK']
    >>> settings.value("POOLALLOC_LEAKS", environ={"POOLALLOC_LEAKS": "all"})
    'all'
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["SETTINGS", "Setting", "flag", "value"]


def _on_off_to_level(old: str) -> str:
    return "off" if old.strip() in ("", "0") else "all"


def _zero_or_one(text: str) -> bool:
    return text in ("0", "1")


def _debug_value(text: str) -> bool:
    # The C core reads POOLALLOC_DEBUG itself at create (native/core/pool.c), where "unpooled"
    # and a number above 1 (a PA_DEBUG_* mask) are debug modes too (docs/design.md).
    return text in ("0", "1", "unpooled") or (text.isascii() and text.isdigit())


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default, accepted values and what it does.

    ``old_names`` maps a name used by earlier versions to the function that turns its value
    into a value of this setting.

    Example:
        >>> SETTINGS["POOLALLOC_LEAKS"].default
        'off'
    """

    name: str
    default: str
    values: str
    meaning: str
    old_names: Mapping[str, Callable[[str], str]] = field(default_factory=dict)
    #: Whether a value is one of ``values``; :func:`flag` refuses any other.
    valid: Callable[[str], bool] = _zero_or_one


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "POOLALLOC_DEBUG",
            "0",
            "0 or 1",
            "BufferPool and Allocator debug mode for pools created without debug=: every block "
            "allocated on its own with canaries (memray sees each acquire), use-after-release "
            "and overflow checks",
            valid=_debug_value,
        ),
        Setting(
            "POOLALLOC_LEAKS",
            "off",
            "off, sampled or all",
            "leak tracking for pools created from now on, buffer and object pools alike: the "
            "stack that acquired each outstanding lease (sampled: every 128th buffer lease)",
            {"POOLALLOC_TRACK_LEAKS": _on_off_to_level},
        ),
        Setting(
            "POOLALLOC_TRACEBACK",
            "0",
            "0 or 1",
            "the poolalloc command prints the full traceback of an error, not just its "
            "one-line message",
            {"PA_TRACEBACK": lambda old: "0" if old.strip() in ("", "0") else "1"},
        ),
    )
}


def value(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of setting ``name``: its variable, else an old name (warns), else the default.

    :raises KeyError: ``name`` is not a setting (a typo in poolalloc itself).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     value("POOLALLOC_LEAKS", environ={"POOLALLOC_TRACK_LEAKS": "1"})
        'all'
        >>> print(caught[0].message)
        POOLALLOC_TRACK_LEAKS is deprecated: set POOLALLOC_LEAKS=all instead
    """
    setting = SETTINGS[name]
    env = os.environ if environ is None else environ
    current = env.get(name, "")
    if current:
        return current
    for old, translate in setting.old_names.items():
        if env.get(old, ""):
            new = translate(env[old])
            warnings.warn(
                f"{old} is deprecated: set {name}={new} instead", DeprecationWarning, stacklevel=3
            )
            return new
    return setting.default


def flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether an on/off setting is on: ``0`` (or unset) is off, ``1`` on.

    Any other value is refused rather than guessed: read as "not 0", ``POOLALLOC_DEBUG=off``
    turned debug mode on.

    :raises ValueError: a value other than 0 or 1, naming the variable.

    Example:
        >>> flag("POOLALLOC_DEBUG", environ={"POOLALLOC_DEBUG": "1"})
        True
        >>> flag("POOLALLOC_DEBUG", environ={})
        False
    """
    setting, raw = SETTINGS[name], value(name, environ)
    if raw and not setting.valid(raw):
        raise ValueError(f"{name} must be {setting.values}, not {raw!r}")
    return raw not in ("", "0")
