"""Checked by mypy --strict (tests/objects/test_objects_typing.py), never run: only definitions.

Every ``type: ignore[code]`` below must be needed: strict mode's warn_unused_ignores turns an
ignore that mypy does not need into an error, so the negative cases are real checks too."""

# ruff: noqa: F841  (the assignments exist to be type-checked)

from __future__ import annotations

from poolalloc import Lease, ObjectPool, ObjectPoolStats


class Parser:
    def __init__(self) -> None:
        self.state: dict[str, int] = {}

    def feed(self, data: bytes) -> int:
        return len(data)


def reset_parser(parser: Parser) -> None:
    parser.state.clear()


def check_sync() -> None:
    pool: ObjectPool[Parser] = ObjectPool(Parser, reset=reset_parser, max_size=4, name="parsers")
    inferred = ObjectPool(bytearray)  # ObjectPool[bytearray], inferred from the factory

    with pool.acquire() as parser:
        n: int = parser.feed(b"abc")

    lease: Lease[Parser] = pool.acquire(timeout=0.5)
    state: dict[str, int] = lease.obj.state
    pool.release(lease)

    with inferred.acquire() as buf:
        buf.extend(b"xyz")
        wrong: str = buf  # type: ignore[assignment]

    stats: ObjectPoolStats = pool.stats()
    rate: float = stats.hit_rate

    bad_pool: ObjectPool[str] = ObjectPool(Parser)  # type: ignore[arg-type]
    pool.release(inferred.acquire())  # type: ignore[arg-type]
    ObjectPool(Parser, reset=lambda b: b.decode())  # type: ignore[attr-defined]


async def check_async(pool: ObjectPool[Parser]) -> int:
    async with pool.acquire_async(timeout=1.0) as parser:
        result = parser.feed(b"x")
    held: Lease[Parser] = await pool.acquire_async()
    held.release()
    return result
