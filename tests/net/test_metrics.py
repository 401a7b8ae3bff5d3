"""The /metrics text is what Prometheus reads: ``prometheus_client``'s own parser is the oracle.

Every metric has ``# HELP`` and ``# TYPE``; figures that only grow are counters named ``*_total``,
the rest gauges; no two metrics share a family. Checked on the renderer and end to end on the
``/metrics`` page of ``poolalloc serve`` after real requests.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from poolalloc.net.metrics import COUNTER_FIELDS, COUNTERS, prometheus_text

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


def _families(text: str) -> dict[str, tuple[str, str, dict[str, float]]]:
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in out, f"family {family.name} twice"
        out[family.name] = (
            family.type,
            family.documentation,
            {s.name: s.value for s in family.samples},
        )
    return out


def _check_exposition(text: str) -> dict[str, tuple[str, str, dict[str, float]]]:
    families = _families(text)
    for name, (kind, doc, samples) in families.items():
        assert doc, f"{name} has no HELP"
        assert kind in ("counter", "gauge"), name
        if kind == "counter":
            assert list(samples) == [f"{name}_total"], name
        else:
            assert list(samples) == [name], name
            assert not name.endswith("_total"), f"{name} looks like a counter but is a gauge"
    lines = text.splitlines()
    samples_lines = [line for line in lines if not line.startswith("#")]
    assert len([line for line in lines if line.startswith("# HELP ")]) == len(samples_lines)
    assert len([line for line in lines if line.startswith("# TYPE ")]) == len(samples_lines)
    return families


def test_renderer_output_parses_with_counters_and_gauges() -> None:
    text = prometheus_text(
        {
            "requests_total": 5,
            "connections_active": 2,
            "buffer_pool_acquires": 7,
            "buffer_pool_live": 1,
            "buffer_pool_core_mapped_bytes": 4096,
            "connection_pool_reused": 3,
            "ratio": 0.25,
            "nothing": float("nan"),
        }
    )
    families = _check_exposition(text)
    assert families["poolalloc_requests"][0] == "counter"
    assert families["poolalloc_buffer_pool_acquires"] == (
        "counter",
        "Read-buffer pool: leases handed out.",
        {"poolalloc_buffer_pool_acquires_total": 7.0},
    )
    assert families["poolalloc_connection_pool_reused"][0] == "counter"
    assert families["poolalloc_buffer_pool_live"][0] == "gauge"
    assert families["poolalloc_buffer_pool_core_mapped_bytes"][0] == "gauge"
    assert families["poolalloc_ratio"][2] == {"poolalloc_ratio": 0.25}
    assert "poolalloc_nothing NaN" in text


def test_a_gauge_beside_a_counter_of_the_same_family_is_refused() -> None:
    with pytest.raises(ValueError, match="share the name 'poolalloc_accept_paused'"):
        prometheus_text({"accept_paused": 0, "accept_paused_total": 1})
    with pytest.raises(ValueError, match="not a valid Prometheus metric name"):
        prometheus_text({"bad-name": 1})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type") or ""
    finally:
        conn.close()


def test_serve_metrics_page_parses(tmp_path: Path) -> None:
    # Both engines share the server's metrics(); the epoll one runs on every kernel.
    port = _free_port()
    cmd = [sys.executable, "-m", "poolalloc", "serve", "--port", str(port), "--engine", "epoll"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < end, "server did not start"
                time.sleep(0.05)
        for _ in range(3):
            assert _get(port, "/test")[0] == 200
        status, body, content_type = _get(port, "/metrics")
    finally:
        proc.terminate()
        proc.wait(10)
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    families = _check_exposition(body.decode())
    requests = families["poolalloc_requests"]
    assert requests[0] == "counter"
    assert requests[2]["poolalloc_requests_total"] >= 3
    for name in COUNTERS:
        assert families[f"poolalloc_{name.removesuffix('_total')}"][0] == "counter"
    assert families["poolalloc_buffer_pool_acquires"][0] == "counter"
    assert families["poolalloc_buffer_pool_core_allocs"][0] == "counter"
    assert families["poolalloc_connections_active"][0] == "gauge"
    assert families["poolalloc_accepting"][2] == {"poolalloc_accepting": 1.0}
    pool_figures = {name: kind for name, (kind, _, _) in families.items() if "_pool_" in name}
    assert len(pool_figures) > 30
    for name, kind in pool_figures.items():
        grows = any(name.endswith(f"_{field}") for field in COUNTER_FIELDS)
        assert kind == ("counter" if grows else "gauge"), name


def test_asgi_server_metrics_parse_as_counters_and_gauges() -> None:
    from poolalloc.net.asgi.server import AsgiServer

    server = AsgiServer(lambda s, r, w: None, port=0)
    families = _check_exposition(prometheus_text(server.metrics()))
    assert families["poolalloc_overloaded"][0] == "counter"
    assert "poolalloc figure" not in families["poolalloc_overloaded"][1]


def test_peak_help_names_its_unit() -> None:
    # pa_stats_t.in_use_peak is a high-water mark of in_use_bytes, not of in_use_blocks
    text = prometheus_text({"buffer_pool_core_in_use_peak": 4096})
    assert "# HELP poolalloc_buffer_pool_core_in_use_peak" in text
    assert "bytes" in text.splitlines()[0]


def test_numa_node_help_explains_every_negative_value() -> None:
    # pa_stats_t.numa_node is PA_NUMA_ANY (-1), PA_NUMA_LOCAL (-2) or a node number
    from poolalloc import SlabPool

    with SlabPool(numa_node="local") as pool:
        value = pool.stats().numa_node
    text = prometheus_text({"buffer_pool_core_numa_node": value})
    assert f"{value}:" in text.splitlines()[0]
