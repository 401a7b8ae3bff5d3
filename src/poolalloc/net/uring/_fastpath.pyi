from collections.abc import Callable
from typing import Any

def complete(
    cqes: memoryview,
    targets: dict[int, Any],
    handle_one: Callable[[int, int, int], None],
    failed: Callable[[Exception, Any], None],
    rest: list[tuple[int, int, int]],
    now: float,
    /,
) -> int: ...
def receive(ring: Any, bid: int, nbytes: int, flags: int, protocol: Any, /) -> None: ...
def setup_ring(
    released: memoryview, buf_more: int, ring_class: type, lease_class: type, /
) -> None: ...
def setup(recv_handler: Callable[..., None], connection_class: type, /) -> None: ...

class CopySender:
    def __init__(self, function_address: int, ring_address: int) -> None: ...
    def __call__(self, fd: int, data: bytes, n: int, ud: int, /) -> int: ...
