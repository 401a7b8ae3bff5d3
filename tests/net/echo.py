"""The echo protocol the engine tests share: each read is written back as it is, without a
copy, and its lease goes back to the pool once the kernel has taken the bytes."""

from __future__ import annotations

from typing import Any


class Echo:
    """Writes every buffer back; ``lost`` is what the connection ended with."""

    lost: BaseException | None = None

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def buffer_received(self, lease: Any, n: int) -> bool:
        self.conn.write(lease.view[:n], owner=lease)
        return True

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc
