"""One settings scheme: every environment variable the package reads is a ``POOLALLOC_*`` entry
of ``poolalloc.settings.SETTINGS``, documented in docs/guide/settings.md; old names still work,
with a DeprecationWarning naming the new variable."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import poolalloc
from poolalloc import BufferPool, ObjectPool, SlabPool, leaks, settings

PACKAGE = Path(poolalloc.__file__).parent
DOC = Path(__file__).resolve().parents[1] / "docs" / "guide" / "settings.md"


def _reads_environment(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            return True
    return False


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if _reads_environment(ast.parse(path.read_text()))
    ]
    assert readers == ["settings.py"]


def test_every_setting_is_named_poolalloc_and_documented_in_one_table() -> None:
    rows = re.findall(r"^\| `(POOLALLOC_\w+)` \| `([^`]*)` \| ([^|]+) \|", DOC.read_text(), re.M)
    assert {name for name, _, _ in rows} == set(settings.SETTINGS)
    for name, default, values in rows:
        setting = settings.SETTINGS[name]
        assert name.startswith("POOLALLOC_")
        assert default == setting.default
        assert values.strip() == setting.values
        for old in setting.old_names:
            assert f"`{old}" in DOC.read_text()
    # the sampling rate said is the one the lease layer uses (it said every 64th; it is 128th)
    sampled = f"(sampled: every {leaks.SAMPLE_EVERY}th buffer lease)"
    assert sampled in settings.SETTINGS["POOLALLOC_LEAKS"].meaning
    assert sampled in DOC.read_text()


@pytest.mark.parametrize(
    ("old", "old_value", "name", "new_value"),
    [
        ("POOLALLOC_TRACK_LEAKS", "1", "POOLALLOC_LEAKS", "all"),
        ("POOLALLOC_TRACK_LEAKS", "0", "POOLALLOC_LEAKS", "off"),
        ("PA_TRACEBACK", "1", "POOLALLOC_TRACEBACK", "1"),
    ],
)
def test_an_old_name_is_read_with_a_deprecation_warning(
    old: str, old_value: str, name: str, new_value: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"^{old} is deprecated: set {name}={new_value}"):
        assert settings.value(name, environ={old: old_value}) == new_value


def test_the_new_name_wins_silently_over_the_old(recwarn: pytest.WarningsRecorder) -> None:
    env = {"POOLALLOC_LEAKS": "sampled", "POOLALLOC_TRACK_LEAKS": "1"}
    assert settings.value("POOLALLOC_LEAKS", environ=env) == "sampled"
    assert not recwarn.list


def test_unset_is_the_default() -> None:
    assert settings.value("POOLALLOC_LEAKS", environ={}) == "off"
    assert not settings.flag("POOLALLOC_DEBUG", environ={"POOLALLOC_DEBUG": "0"})


def test_an_on_off_setting_refuses_what_is_not_0_or_1(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read as "anything but 0", POOLALLOC_DEBUG=off turned debug mode on.
    for bad in ("off", "false", "yes", " 0"):
        with pytest.raises(ValueError, match=f"^POOLALLOC_DEBUG must be 0 or 1, not '{bad}'$"):
            settings.flag("POOLALLOC_DEBUG", environ={"POOLALLOC_DEBUG": bad})
    for good in ("1", "unpooled", "7"):  # the core's own forms (docs/design.md) still pass
        assert settings.flag("POOLALLOC_DEBUG", environ={"POOLALLOC_DEBUG": good})
    monkeypatch.setenv("POOLALLOC_DEBUG", "off")
    with pytest.raises(ValueError, match="POOLALLOC_DEBUG must be 0 or 1"):
        BufferPool(64)
    with pytest.raises(ValueError, match="POOLALLOC_DEBUG must be 0 or 1"):
        SlabPool()  # the core reads the variable itself


def test_one_leak_switch_covers_buffer_and_object_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLALLOC_LEAKS", "all")
    with BufferPool(64, capacity=2) as buffers:
        buf = buffers.acquire()
        assert "test_one_leak_switch_covers_buffer_and_object_pools" in buffers.leak_report()
        buf.release()
    objects: ObjectPool[list[int]] = ObjectPool(list)
    lease = objects.acquire()
    with pytest.warns(ResourceWarning):
        assert len(objects.close().stacks) == 1  # the acquiring stack was recorded
    lease.release()


def test_the_old_object_leak_variable_still_tracks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POOLALLOC_LEAKS", raising=False)
    monkeypatch.setenv("POOLALLOC_TRACK_LEAKS", "1")
    with pytest.warns(DeprecationWarning, match="set POOLALLOC_LEAKS=all"):
        objects: ObjectPool[list[int]] = ObjectPool(list)
    lease = objects.acquire()
    with pytest.warns(ResourceWarning):
        assert len(objects.close().stacks) == 1
    lease.release()
    with pytest.warns(DeprecationWarning, match="POOLALLOC_TRACK_LEAKS is deprecated"):
        assert leaks.level() == "all"  # the same switch for buffer pools


def test_a_bad_level_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLALLOC_LEAKS", "everything")
    with pytest.raises(ValueError, match="POOLALLOC_LEAKS must be one of off, sampled, all"):
        BufferPool(64)


def test_the_cli_traceback_switch_and_its_old_name() -> None:
    def run(env: dict[str, str]) -> str:
        return subprocess.run(
            [sys.executable, "-m", "poolalloc", "bench", "--bench-dir", "/nonexistent"],
            capture_output=True, text=True, timeout=120, check=False, env=env, cwd="/",
        ).stderr  # fmt: skip

    # The environment as it is (under ASan it carries LD_PRELOAD), less every setting.
    names = {*settings.SETTINGS, *(old for s in settings.SETTINGS.values() for old in s.old_names)}
    base = {k: v for k, v in os.environ.items() if k not in names}
    assert "Traceback" not in run(base)
    assert "Traceback" in run({**base, "POOLALLOC_TRACEBACK": "1"})
    old = run({**base, "PA_TRACEBACK": "1"})
    assert "Traceback" in old
    warning = "poolalloc: warning: PA_TRACEBACK is deprecated: set POOLALLOC_TRACEBACK=1 instead"
    assert f"{warning}\n" in old
