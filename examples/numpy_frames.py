"""Frames from a socket straight into numpy arrays: no copy between the kernel and the array.

A sender thread streams fixed-size frames (a 16-byte header, then rows x cols float32 values)
over a loopback TCP connection. The receiver reads each frame with ``recv_into`` directly into
a pooled buffer, then wraps that buffer with ``np.frombuffer``: the array *is* the pooled
memory. The buffer goes back to the pool when the array and the lease are both gone, so a
pipeline can hand arrays on without ever copying and without reusing memory too early.

    python examples/numpy_frames.py --frames 200
    python examples/numpy_frames.py --once          # one frame, for a smoke test
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading
import time

import numpy as np

import poolalloc

HEADER = struct.Struct("<QII")  # frame number, rows, cols


def send_frames(listener: socket.socket, frames: int, rows: int, cols: int) -> None:
    """Accept one client and send it ``frames`` frames whose values encode the frame number."""
    conn, _ = listener.accept()
    with conn:
        for number in range(frames):
            data = np.full((rows, cols), number, dtype=np.float32)
            data[0, 0] = -1.0  # a marker, so the receiver can check the layout too
            conn.sendall(HEADER.pack(number, rows, cols) + data.tobytes())


def recv_exactly(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from ``sock``; False at a clean end of stream before the first byte."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return False
            raise ConnectionError("stream ended inside a frame")
        got += n
    return True


def receive_frames(sock: socket.socket, pool: poolalloc.BufferPool, frame_bytes: int) -> int:
    """Read frames into pooled buffers, check each array, return how many arrived."""
    count = 0
    while True:
        buf = pool.acquire()
        view = buf.view
        if not recv_exactly(sock, view[:frame_bytes]):
            view.release()
            buf.release()
            return count
        number, rows, cols = HEADER.unpack_from(view)
        frame = np.frombuffer(view, dtype=np.float32, count=rows * cols, offset=HEADER.size)
        frame = frame.reshape(rows, cols)
        # The array's memory is the pooled block itself: no copy was made.
        assert np.shares_memory(frame, np.frombuffer(view, dtype=np.uint8))
        assert frame[0, 0] == -1.0
        assert frame.size == 1 or frame[-1, -1] == number  # (1x1: the marker is the last value)
        count += 1
        del frame  # the array must go before the block can be reused
        view.release()
        buf.release()


def positive(text: str) -> int:
    """An argparse type: an int of at least 1 (a frame of 0 rows has no place for the marker)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free port)")
    parser.add_argument("--frames", type=int, default=500, help="frames to stream")
    parser.add_argument("--once", action="store_true", help="stream a single frame and exit")
    parser.add_argument("--rows", type=positive, default=256)
    parser.add_argument("--cols", type=positive, default=256)
    args = parser.parse_args()
    frames = 1 if args.once else args.frames
    frame_bytes = HEADER.size + args.rows * args.cols * 4

    listener = socket.create_server(("127.0.0.1", args.port))
    sender = threading.Thread(
        target=send_frames, args=(listener, frames, args.rows, args.cols), daemon=True
    )
    sender.start()
    start = time.perf_counter()
    with poolalloc.BufferPool(frame_bytes, capacity=4) as pool:
        with socket.create_connection(listener.getsockname()) as sock:
            received = receive_frames(sock, pool, frame_bytes)
        sender.join()
        listener.close()
        elapsed = time.perf_counter() - start
        outstanding = pool.outstanding()
    mb = received * frame_bytes / 1e6
    print(
        f"{received} frames of {args.rows}x{args.cols} float32 in {elapsed:.3f}s "
        f"({mb / elapsed:.0f} MB/s), read in place; outstanding buffers: {outstanding}"
    )
    return 0 if received == frames and outstanding == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
