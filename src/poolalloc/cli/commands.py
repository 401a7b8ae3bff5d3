"""The ``poolalloc`` command: ``info``, ``serve``, ``demo``, ``bench`` and ``selfcheck``.

Errors are one line on stderr, ``poolalloc: error: ...``: exit status 2 for a bad command
line, 1 for a failure while running. No traceback reaches the user (set ``POOLALLOC_TRACEBACK=1`` to
see one when debugging).

Example:
    >>> main(["info", "--json"])  # doctest: +ELLIPSIS
    {
      "version": {
        "poolalloc": "...",
    ...
    0
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

import poolalloc
from poolalloc import settings
from poolalloc.cli import _bench, _demo, _info, _selfcheck

__all__ = [
    "bounded_int",
    "build_parser",
    "directory",
    "host_address",
    "main",
    "output_dir",
    "output_file",
    "port_number",
    "positive_float",
    "positive_int",
]

Command = Callable[[argparse.Namespace], int]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``poolalloc: error: ...``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"poolalloc: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1.

    Example:
        >>> positive_int("3")
        3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number of seconds above 0.

    Example:
        >>> positive_float("2.5")
        2.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


def _creatable(path: Path) -> None:
    """Raise ArgumentTypeError unless ``path`` (a file or folder to make) can be created."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create {path}: {parent} is not writable")


def output_file(text: str) -> str:
    """An argparse type: a file to write (missing folders are made); checked before any work.

    Example:
        >>> output_file("figures.json")
        'figures.json'
    """
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: name a file")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"cannot write {text}: permission denied")
    else:
        _creatable(path)
    return text


def output_dir(text: str) -> str:
    """An argparse type: a folder to write into (made if missing); checked before any work.

    Example:
        >>> output_dir("charts")
        'charts'
    """
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file: name a directory")
    if not path.exists():
        _creatable(path)
    return text


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535.

    Example:
        >>> port_number("8080")
        8080
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _subparser(
    subs: argparse._SubParsersAction[OneLineParser], name: str, summary: str, examples: str
) -> OneLineParser:
    parser = subs.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(parser=parser)  # main() reports stray arguments with this command's help
    return parser


def cmd_info(args: argparse.Namespace) -> int:
    report = _info.collect()
    print(json.dumps(report, indent=2) if args.json else _info.render(report))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return _demo.run_demo(
        args.connections,
        args.requests,
        timeout=args.timeout,
        baseline=not args.no_baseline,
        engine=args.engine,
        json_path=args.json,
        workloads_size=args.workloads,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    if args.suite == "workloads":
        return _bench.run_workload_suite(
            args.workload,
            size="tiny" if args.tiny else "quick" if args.quick else "full",
            json_path=args.json,
            plot_dir=args.plot,
        )
    return _bench.run_bench(
        args.suite,
        quick=args.quick,
        json_path=args.json,
        plot_dir=args.plot,
        with_profile=args.profile,
        bench_dir=args.bench_dir,
    )


#: seconds an idle connection is kept: the built-in server's, and an ASGI application's between
#: requests (uvicorn's keep-alive default)
HTTP_IDLE_TIMEOUT = 60.0
ASGI_IDLE_TIMEOUT = 5.0
#: seconds an ASGI application's lifespan startup, and its shutdown, may each take (hypercorn's
#: startup and shutdown timeouts are 60 s too)
ASGI_LIFESPAN_TIMEOUT = 60.0
#: a request body's time, and the rate that extends it, on both servers (Apache
#: mod_reqtimeout's body=20,MinRate=500)
HTTP_BODY_TIMEOUT = 20.0
HTTP_BODY_MIN_RATE = 500
#: seconds a stop signal lets the answers (requests, with --app) under way take, on both servers
GRACEFUL_TIMEOUT = 30.0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.app is not None:
        return _serve_asgi(args)
    from poolalloc.cli.baseline import FreshBytearrayPool  # noqa: PLC0415 (loads only to serve)
    from poolalloc.net.http.serve import serve  # noqa: PLC0415 (the net layer loads only to serve)

    engine = "epoll" if args.fresh_bytearray else args.engine

    return serve(
        args.host,
        args.port,
        args.root,
        workers=args.workers,
        uploads=args.uploads,
        buffer_size=args.buffer_size,
        buffer_capacity=1024 if args.buffer_capacity is None else args.buffer_capacity,
        max_connections=args.max_connections,
        idle_timeout=HTTP_IDLE_TIMEOUT if args.idle_timeout is None else args.idle_timeout,
        read_pool=FreshBytearrayPool if args.fresh_bytearray else None,
        engine=engine,
        body_timeout=HTTP_BODY_TIMEOUT if args.body_timeout is None else args.body_timeout,
        body_min_rate=HTTP_BODY_MIN_RATE if args.body_min_rate is None else args.body_min_rate,
        graceful_timeout=(
            GRACEFUL_TIMEOUT if args.graceful_timeout is None else args.graceful_timeout
        ),
    )


def host_address(text: str) -> str:
    """An argparse type: an address to listen on, IPv4 or IPv6 (``[::1]`` or ``::1``), or a
    host name. ``0.0.0.0`` and ``::`` listen on every interface.

    Example:
        >>> host_address("[::]"), host_address("0.0.0.0")
        ('::', '0.0.0.0')
    """
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if host and all(_LABEL.fullmatch(label) for label in labels):
        return host
    raise argparse.ArgumentTypeError(
        f"not an IP address or host name: {text!r} (use e.g. 127.0.0.1, 0.0.0.0, ::1 or ::)"
    )


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)


def bounded_int(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (argparse names the option).

    Example:
        >>> bounded_int(1, 1024)("4")
        4
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be {low}-{high}{unit}, got {value}: give a value in that range"
            )
        return value

    return parse


def directory(text: str) -> str:
    """An argparse type: an existing directory.

    Example:
        >>> directory(".")
        '.'
    """
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such directory: give an existing one")
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is not a directory: give a directory")
    if not os.access(text, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: permission denied: give a readable directory")
    return text


def _check_serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks of ``serve`` options that depend on each other (usage errors, status 2)."""
    if args.uploads and args.root is None:
        parser.error("--uploads needs --root DIR (the directory uploads are written to)")
    if args.fresh_bytearray and args.engine == "uring":
        # io_uring reads into a ring of pool buffers that the kernel picks: no bytearray there.
        parser.error("--fresh-bytearray works with --engine epoll only: drop one of them")
    if args.lifespan_timeout is not None and args.app is None:
        parser.error("--lifespan-timeout bounds an ASGI application's lifespan: it needs --app")
    if args.app_dir is not None and args.app is None:
        parser.error("--app-dir is where --app is imported from: it needs --app")
    if args.app is not None:
        from poolalloc.net.asgi.server import split_app_spec  # noqa: PLC0415 (only with --app)

        try:
            split_app_spec(args.app)
        except ValueError as exc:  # a usage error, status 2, before anything is imported
            parser.error(f"argument --app: {exc} (main:app for `app` in main.py)")
        # the application runs on asyncio: options of the built-in server would be ignored
        given = [
            flag
            for flag, on in (
                ("--root", args.root is not None),
                ("--uploads", args.uploads),
                ("--fresh-bytearray", args.fresh_bytearray),
                ("--max-connections", args.max_connections is not None),
                ("--engine", args.engine != "auto"),
            )
            if on
        ]
        if given:
            parser.error(
                f"--app serves the application alone on asyncio: drop {', '.join(given)} "
                "(options of the built-in server)"
            )


def _serve_asgi(args: argparse.Namespace) -> int:
    from poolalloc.net.asgi import serve as serve_asgi  # noqa: PLC0415 (loads only to serve)

    return serve_asgi(
        args.app, args.host, args.port, workers=args.workers,
        app_dir="." if args.app_dir is None else args.app_dir,
        buffer_size=args.buffer_size, buffer_capacity=args.buffer_capacity,
        keep_alive_timeout=ASGI_IDLE_TIMEOUT if args.idle_timeout is None else args.idle_timeout,
        lifespan_timeout=(
            ASGI_LIFESPAN_TIMEOUT if args.lifespan_timeout is None else args.lifespan_timeout
        ),
        body_timeout=HTTP_BODY_TIMEOUT if args.body_timeout is None else args.body_timeout,
        body_min_rate=HTTP_BODY_MIN_RATE if args.body_min_rate is None else args.body_min_rate,
        graceful_timeout=(
            GRACEFUL_TIMEOUT if args.graceful_timeout is None else args.graceful_timeout
        ),
    )  # fmt: skip


def add_serve(subs: argparse._SubParsersAction[OneLineParser]) -> None:
    p = _subparser(
        subs,
        "serve",
        "run the HTTP/1.1 server (GET /test, static files with ranges, GET /metrics)",
        "  poolalloc serve --port 8080\n  poolalloc serve --root ./public --uploads --workers 2\n"
        "  poolalloc serve --host :: --port 8080 --root ./public   # every interface, IPv6+IPv4\n"
        "  poolalloc serve --fresh-bytearray   # the same server without pooled read buffers\n"
        "  poolalloc serve --app main:app      # an ASGI application (Starlette, FastAPI...)\n",
    )
    p.add_argument(
        "--host",
        type=host_address,
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 or :: for every interface)",
    )
    p.add_argument(
        "--port", type=port_number, default=8080, help="TCP port (default 8080; 0: any free port)"
    )
    p.add_argument("--root", type=directory, help="serve the files under this directory")
    p.add_argument("--uploads", action="store_true", help="accept PUT/POST uploads under --root")
    p.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="run this ASGI 3 application (imported as uvicorn does) on pooled asyncio reads",
    )
    p.add_argument(
        "--app-dir",
        type=directory,
        help="with --app: directory put first on sys.path to import it from (default: current)",
    )
    p.add_argument(
        "--workers",
        type=bounded_int(1, 1024),
        default=1,
        help="processes sharing the port with SO_REUSEPORT (default 1)",
    )
    p.add_argument(
        "--buffer-size",
        type=bounded_int(256, 16 << 20, " bytes"),
        default=65536,
        help="bytes per pooled read buffer, 256 to 16 MiB (default 65536)",
    )
    p.add_argument(
        "--buffer-capacity",
        type=bounded_int(1, 1 << 20),
        help="most read buffers out at once (default 1024; with --app: no limit)",
    )
    p.add_argument(
        "--max-connections",
        type=bounded_int(1, 1 << 24),
        help="connection limit",
    )
    p.add_argument(
        "--idle-timeout",
        type=positive_float,
        help=f"seconds before an idle connection is closed (default {HTTP_IDLE_TIMEOUT:g}; "
        f"with --app, between requests: {ASGI_IDLE_TIMEOUT:g})",
    )
    p.add_argument(
        "--body-timeout",
        type=positive_float,
        help=f"seconds a request body may take (default {HTTP_BODY_TIMEOUT:g}), one more per "
        "--body-min-rate bytes received; 408 past it",
    )
    p.add_argument(
        "--body-min-rate",
        type=bounded_int(0, 1 << 40, " bytes per second"),
        help=f"bytes per second that earn a request body a second more (default "
        f"{HTTP_BODY_MIN_RATE}; 0: --body-timeout bounds the whole body)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=positive_float,
        help="seconds the first SIGINT/SIGTERM lets the answers under way take before the "
        f"rest is reset (default {GRACEFUL_TIMEOUT:g}); a second SIGINT stops at once",
    )
    p.add_argument(
        "--lifespan-timeout",
        type=positive_float,
        help="with --app: seconds the application's lifespan startup, and its shutdown, may "
        f"each take (default {ASGI_LIFESPAN_TIMEOUT:g}); a startup past it exits with status 3",
    )
    p.add_argument(
        "--engine",
        choices=("auto", "epoll", "uring"),
        default="auto",
        help="event loop: epoll Reactor, io_uring Proactor (epoll if unusable, saying why), "
        "or auto (epoll until io_uring meets its goals in docs/benchmarks.md; "
        "poolalloc info says which)",
    )
    p.add_argument(
        "--fresh-bytearray",
        action="store_true",
        help="allocate a new bytearray per read instead of pooling (for comparison)",
    )
    p.set_defaults(func=cmd_serve, check=lambda args: _check_serve(p, args))


def cmd_selfcheck(args: argparse.Namespace) -> int:
    return _selfcheck.run(args.rounds, args.threads)


def add_selfcheck(subs: argparse._SubParsersAction[OneLineParser]) -> None:
    p = _subparser(
        subs,
        "selfcheck",
        "check the native allocator: every size class, several threads, cross-thread frees",
        "  poolalloc selfcheck\n  poolalloc selfcheck --rounds 10 --threads 8\n",
    )
    p.add_argument("--rounds", type=positive_int, default=3, help="rounds (default 3)")
    p.add_argument("--threads", type=positive_int, default=4, help="threads (default 4)")
    p.set_defaults(func=cmd_selfcheck)


def add_info(subs: argparse._SubParsersAction[OneLineParser]) -> None:
    p = _subparser(
        subs,
        "info",
        "show the build, the machine and what poolalloc can use on it",
        "  poolalloc info\n  poolalloc info --json > info.json\n",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_info)


def add_demo(subs: argparse._SubParsersAction[OneLineParser]) -> None:
    p = _subparser(
        subs,
        "demo",
        "show where pooling makes a difference (many connections, hand-off to threads), then "
        "the HTTP server under load against fresh bytearray reads",
        "  poolalloc demo\n  poolalloc demo --connections 200 --requests 50\n"
        "  poolalloc demo --no-baseline --json demo.json\n",
    )
    p.add_argument(
        "--connections",
        type=positive_int,
        default=1000,
        help="concurrent keep-alive connections (default 1000)",
    )
    p.add_argument(
        "--requests",
        type=positive_int,
        default=100,
        help="sequential requests per connection (default 100)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=50.0,
        help="seconds before unanswered requests count as failed (default 50)",
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="skip the comparison run with fresh bytearrays"
    )
    p.add_argument(
        "--engine",
        choices=("epoll", "uring", "auto"),
        default="epoll",
        help="the pooled server's event loop (default epoll; the baseline always runs on epoll)",
    )
    p.add_argument(
        "--workloads",
        choices=("demo", "tiny", "none"),
        default="demo",
        help="how long the workload runs that lead the demo are (default demo; none: skip them)",
    )
    p.add_argument(
        "--json", metavar="FILE", type=output_file, help="also write the figures to FILE as JSON"
    )
    p.set_defaults(func=cmd_demo)


def add_bench(subs: argparse._SubParsersAction[OneLineParser]) -> None:
    p = _subparser(
        subs,
        "bench",
        "run the benchmarks: ratios against baselines measured in the same run",
        "  poolalloc bench workloads --quick   # from an install: no clone needed\n"
        "  poolalloc bench workloads --json w.json --plot docs/img\n"
        "  poolalloc bench alloc --quick\n  poolalloc bench all --json out.json --plot charts/\n"
        "  poolalloc bench net --profile   # flame graph of the server under load (py-spy)\n",
    )
    p.add_argument(
        "suite",
        nargs="?",
        default="all",
        choices=["workloads", "alloc", "objects", "net", "zerocopy", "all"],
        help="workloads: the suite shipped in the package (relay, many connections, hand-off, "
        "churn); the others run the bench/ scripts of a clone",
    )
    p.add_argument(
        "--workload",
        action="append",
        choices=["relay", "connections", "handoff", "churn"],
        help="with `workloads`: run only this one (repeatable)",
    )
    p.add_argument("--tiny", action="store_true", help="with `workloads`: seconds-long runs")
    p.add_argument("--quick", action="store_true", help="short runs (noisier figures)")
    p.add_argument("--json", metavar="FILE", type=output_file, help="write every figure to FILE")
    p.add_argument(
        "--plot",
        metavar="DIR",
        type=output_dir,
        help="write PNG charts into DIR (needs matplotlib)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="record a flame graph of the server under load with py-spy",
    )
    p.add_argument(
        "--bench-dir", default="bench", help="where the bench_*.py scripts are (default ./bench)"
    )
    p.set_defaults(func=cmd_bench)


def build_parser() -> OneLineParser:
    """The whole command line.

    Example:
        >>> build_parser().parse_args(["demo", "--connections", "5"]).connections
        5
    """
    parser = OneLineParser(
        prog="poolalloc",
        description="Pooled, aligned buffers for high-performance Python IO.",
        epilog="examples:\n  poolalloc info\n  poolalloc demo\n  poolalloc bench alloc --quick\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=poolalloc.__version__)
    subs = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=OneLineParser)
    for add in (add_info, add_serve, add_demo, add_bench, add_selfcheck):
        add(subs)
    return parser


_plain_showwarning = warnings.showwarning


def _show_warning(  # noqa: PLR0917 - the signature of warnings.showwarning
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if category is DeprecationWarning and "is deprecated: set POOLALLOC_" in str(message):
        print(f"poolalloc: warning: {message}", file=sys.stderr)
    else:
        _plain_showwarning(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Example:
        >>> main(["--version"])
        Traceback (most recent call last):
        SystemExit: 0
    """
    # The warning that an old environment variable was read is for the person at the terminal:
    # shown (Python hides DeprecationWarning outside __main__), on one line like the errors.
    warnings.filterwarnings("default", r".* is deprecated: set POOLALLOC_", DeprecationWarning)
    warnings.showwarning = _show_warning
    args, stray = build_parser().parse_known_args(argv)
    if stray:
        parser: argparse.ArgumentParser = getattr(args, "parser", None) or build_parser()
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    check: Callable[[argparse.Namespace], None] | None = getattr(args, "check", None)
    if check is not None:
        check(args)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        build_parser().print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        print("poolalloc: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        try:
            full = settings.flag("POOLALLOC_TRACEBACK")
        except ValueError as bad:  # the error itself must still be said
            print(f"poolalloc: warning: {bad}", file=sys.stderr)
            full = False
        if full:
            traceback.print_exc()
        print(f"poolalloc: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """What went wrong, without Python's decoration (``[Errno 2]``) or a second line."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None:
            text += f": {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
