"""Tables and charts of the workload suite's documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Doc = dict[str, Any]


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    return f"{x:.3g}"


def render(doc: Doc) -> str:
    """A workload's table: each variant's medians [min-max], pooled's ratio to each baseline,
    then the goals with the measured ratio.

    Example:
        >>> from poolalloc.cli.workloads._common import Metric, Variant, build_doc
        >>> a, b = Variant("pooled"), Variant("fresh")
        >>> a.add(t=1.0); b.add(t=4.0)
        >>> print(render(build_doc("x", "demo", {}, [Metric("t", "time", "s", True)], [a, b], [])))
        demo
        variant  time (s)
        pooled   1 [1-1]
        fresh    4 [4-4]  0.25x
        (median [min-max] of the runs; Nx: pooled's median / that row's median)
    """
    metrics = doc["metrics"]
    ratio_of = {(r["metric"], r["b"]): r["ratio"] for r in doc["ratios"]}
    head = ["variant", *(f"{m['label']} ({m['unit']})" for m in metrics)]
    rows = [head]
    for row in doc["rows"]:
        cells = [row["variant"]]
        for m in metrics:
            if not row["available"]:
                cells.append(row["note"] or "not run")
                continue
            s = row["summary"].get(m["key"])
            if s is None:
                cells.append("-")
                continue
            cell = f"{_fmt(s['median'])} [{_fmt(s['min'])}-{_fmt(s['max'])}]"
            ratio = ratio_of.get((m["key"], row["variant"]))
            cells.append(cell + (f"  {ratio:.2f}x" if ratio is not None else ""))
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [doc["title"]]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("(median [min-max] of the runs; Nx: pooled's median / that row's median)")
    for g in doc["goals"]:
        if g["ratio"] is None:
            ran = {r["variant"] for r in doc["rows"] if g["metric"] in (r.get("summary") or {})}
            missing = [v for v in (g["a"], g["b"]) if v not in ran] or [g["b"]]
            lines.append(f"goal: {g['goal']}: not measured ({' and '.join(missing)} did not run)")
            continue
        verdict = "met" if g["met"] else "NOT met"
        lines.append(f"goal: {g['goal']}: {g['ratio']:.2f}x, {verdict}")
    return "\n".join(lines)


def plot(docs: list[Doc], out_dir: str | Path, *, command: str = "") -> list[Path]:
    """One PNG per workload document: a panel per figure, a bar per variant with its range.

    A panel uses a log scale when its values span more than a factor of 30.

    Example:
        >>> import tempfile
        >>> plot([], tempfile.mkdtemp())
        []

    :raises RuntimeError: matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: PLC0415 (optional: the bench extra)
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'poolalloc[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import NullFormatter  # noqa: PLC0415

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in docs:
        rows = [r for r in doc["rows"] if r["available"]]
        metrics = doc["metrics"]
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(5 * len(metrics), 0.45 * len(rows) + 1.8), squeeze=False
        )
        for ax, m in zip(axes[0], metrics, strict=True):
            names, med, low, high = [], [], [], []
            for r in rows:
                s = r["summary"].get(m["key"])
                if s is None:
                    continue
                names.append(r["variant"])
                med.append(s["median"])
                low.append(s["median"] - s["min"])
                high.append(s["max"] - s["median"])
            colors = ["#3b7dd8" if n == "pooled" else "#a0a0a0" for n in names]
            ax.barh(names, med, xerr=[low, high], color=colors, capsize=3)
            positive = [v for v in med if v > 0]
            if positive and max(positive) / min(positive) > 30:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # labels only at the decades
            better = "lower" if m["lower_is_better"] else "higher"
            ax.set_xlabel(f"{m['label']} ({m['unit']}), {better} is better")
            ax.invert_yaxis()
            if ax is not axes[0][0]:
                ax.set_yticklabels([])
        fig.suptitle(doc["title"], fontsize=10)
        if command:
            fig.text(0.01, 0.01, command, fontsize=7, color="#666666")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        path = out / f"workload_{doc['name']}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
