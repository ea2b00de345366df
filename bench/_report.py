"""The benchmark's results: the table, the targets, ``docs/benchmarks.md`` and the plot."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._backends import IMPLS, Impl
from ._latency import LatencyResult
from ._rates import RateResult
from ._scaling import ScaleResult
from ._stats import percentile

__all__ = ["Report", "Target", "markdown", "plot", "table", "targets"]

LABEL = {"aioleader": "aioleader", "kubernetes_asyncio": "kubernetes_asyncio"}
# The table's verb columns, in order; anything else is listed after them.
VERBS = ("GET", "PUT", "LIST", "WATCH")


@dataclass
class Report:
    """Everything one run measured, and how."""

    command: str
    started: str
    finished: str = ""
    duration_s: float = 0.0
    machine: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    handover: LatencyResult | None = None
    crash_short: dict[Impl, LatencyResult] = field(default_factory=dict)
    crash_default: dict[Impl, LatencyResult] = field(default_factory=dict)
    rates: dict[Impl, RateResult] = field(default_factory=dict)
    cpu: dict[Impl, ScaleResult] = field(default_factory=dict)
    scale: dict[Impl, list[ScaleResult]] = field(default_factory=dict)
    scale_slow: dict[Impl, list[ScaleResult]] = field(default_factory=dict)
    following: dict[Impl, ScaleResult] = field(default_factory=dict)
    default_pool: ScaleResult | None = None
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    default_timing: tuple[float, float, float] = (15.0, 10.0, 2.0)


# -- formatting --------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if abs(seconds) >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def p99_label(n: int) -> str:
    """p99 of fewer than 100 samples is (by nearest rank) the maximum: say so."""
    return "p99" if n >= 100 else f"p99 (n={n} < 100: the max)"


def latency_cell(result: LatencyResult | None, secondary: bool = False) -> str:
    if result is None:
        return "not run"
    values = result.secondary if secondary else result.values
    if not values:
        return f"no samples ({result.failures} without a new leader)"
    n = len(values)
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    tail = "p99" if n >= 100 else "max"
    cell = f"{ms(p50)} / {ms(p99)} {tail} (n={n})"
    if result.failures:
        cell += f", {result.failures} without a new leader"
    return cell


def rate_cell(rates: dict[str, float]) -> str:
    cells = [f"{v} {rates.get(v, 0.0):.1f}" for v in VERBS]
    cells += [f"{v} {n:.1f}" for v, n in sorted(rates.items()) if v not in VERBS]
    return f"{sum(rates.values()):.1f}: " + ", ".join(cells)


def timing_label(timing: tuple[float, float, float]) -> str:
    return "/".join(f"{x:g}" for x in timing)


def _largest_ok(results: list[ScaleResult]) -> ScaleResult | None:
    ok = [r for r in results if r.ok]
    return max(ok, key=lambda r: r.leases) if ok else None


def _first_failed(results: list[ScaleResult]) -> ScaleResult | None:
    failed = [r for r in results if not r.ok]
    return min(failed, key=lambda r: r.leases) if failed else None


def scale_cell(results: list[ScaleResult] | None) -> str:
    if not results:
        return "not run"
    best, failed = _largest_ok(results), _first_failed(results)
    parts = [f"{best.leases:,} held" if best is not None else "none of the sizes held"]
    if failed is not None:
        parts.append(f"{failed.leases:,} failed: {failed.problem}")
    return "; ".join(parts)


def _projection(result: ScaleResult | None, retry_period: float) -> str:
    per = None if result is None else result.cpu_per_renewal
    if per is None:
        return ""
    return f" (one core's worth of renewals: {retry_period / per:,.0f} leases, projected)"


# -- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    what: str
    met: bool | None  # None: not measured
    detail: str


def targets(report: Report) -> list[Target]:
    found: list[Target] = []
    h = report.handover
    if h is not None and h.values:
        p50, p99 = percentile(h.values, 0.5), percentile(h.values, 0.99)
        assert p50 is not None
        assert p99 is not None
        found.append(_bound("graceful handover p50 < 50 ms", p50, 0.050))
        found.append(_bound(f"graceful handover {p99_label(h.n)} < 200 ms", p99, 0.200))
    else:
        found.append(Target("graceful handover < 50 ms p50, < 200 ms p99", None, "not measured"))
    for label, results in (("LD 4/3/1", report.crash_short), ("15/10/2", report.crash_default)):
        a = results.get("aioleader")
        if a is not None and a.values:
            p99 = percentile(a.values, 0.99)
            assert p99 is not None
            found.append(
                _bound(f"crash failover within LD + 0.2 s at {p99_label(a.n)} ({label})", p99, 0.2)
            )
    rates = report.rates.get("aioleader")
    if rates is not None:
        chatter = {v: n for v, n in rates.follower.items() if v not in ("WATCH", "LIST")}
        again = {v: n for v, n in rates.follower.items() if v in ("WATCH", "LIST")}
        detail = f"followers: {rate_cell(rates.follower)} per minute each"
        if again:
            detail += " (WATCH/LIST: watch re-establishment)"
        found.append(Target("followers 0 requests/min in steady state", not chatter, detail))
        slack = 60.0 / rates.window_s  # one request more or less at the window's edges
        total, gets = rates.total("leader"), rates.leader.get("GET", 0.0)
        met = gets == 0 and total <= 30 + slack
        found.append(
            Target(
                "leader 30 requests/min with no GETs (15/10/2)",
                met,
                f"leader: {rate_cell(rates.leader)} per minute",
            )
        )
    sizes = report.scale.get("aioleader")
    if sizes:
        best = _largest_ok(sizes)
        held = best.leases if best is not None else 0
        detail = scale_cell(sizes)
        if held < 10_000:
            detail += f"; target 10,000: {10_000 / held:.0f}× short" if held else ""
            detail += _projection(report.cpu.get("aioleader"), report.default_timing[2])
        found.append(Target("10,000 leases in one process on one core", held >= 10_000, detail))
    found += _scale_targets(report)
    return found


def _size(results: list[ScaleResult], leases: int) -> ScaleResult | None:
    return next((r for r in results if r.leases == leases), None)


def _scale_targets(report: Report) -> list[Target]:
    """Issue 12's bars: 1,000 leases with a quiet loop, 5,000 at 15/10/2 and 10,000 at 30/20/5
    held, and one list+watch for a process following many leases."""
    found: list[Target] = []
    thousand = _size(report.scale.get("aioleader", []), 1000)
    what = "1,000 leases at 15/10/2: 0 terms lost, loop lag p99 < 10 ms, max < 50 ms"
    if thousand is None or not thousand.figures:
        found.append(Target(what, None, "not measured"))
    else:
        f = thousand.figures
        p99, top = f.get("lag_p99"), f.get("lag_max")
        met = (
            thousand.missed == 0
            and p99 is not None
            and p99 < 0.010
            and top is not None
            and top < 0.050
        )
        detail = f"{thousand.missed} lost, lag p99 {ms(p99)}, max {ms(top)}"
        found.append(Target(what, met, detail))
    for label, results, leases in (
        ("15/10/2", report.scale.get("aioleader", []), 5000),
        ("30/20/5", report.scale_slow.get("aioleader", []), 10000),
    ):
        what = f"{leases:,} leases at {label} held on one core, no term lost"
        r = _size(results, leases)
        if r is None:
            prefix = f"aioleader at {leases:,} leases ({label})"
            skipped = [s for s in report.skipped if s.startswith(prefix)]
            found.append(
                Target(
                    what, None if not skipped else False, skipped[0] if skipped else "not measured"
                )
            )
            continue
        f = r.figures
        detail = (
            ("held" if r.ok else f"failed: {r.problem}")
            + (
                f"; CPU {r.cpu_util:.0%} of a core, {r.cpu_per_renewal * 1000:.2f} ms per renewal"
                if r.cpu_util is not None and r.cpu_per_renewal
                else ""
            )
            + f"; loop lag p99 {ms(f.get('lag_p99'))}"
        )
        found.append(Target(what, r.ok, detail))
    following = report.following.get("aioleader")
    what = "one list+watch per namespace and kind (a process following many leases)"
    if following is None or not following.figures:
        found.append(Target(what, None, "not measured"))
    else:
        f = following.figures
        watches, requests = f.get("server_watches"), f.get("server_requests") or {}
        other = report.following.get("kubernetes_asyncio")
        versus = ""
        if other is not None and other.figures:
            versus = (
                f"; kubernetes_asyncio: {other.figures.get('sockets')} sockets, "
                f"{sum((other.figures.get('server_requests') or {}).values()):,} requests"
            )
        detail = (
            f"{following.leases:,} followed: {watches} watch(es) at the server, "
            f"{f.get('sockets')} sockets, {sum(requests.values())} requests in the window" + versus
        )
        met = None if watches is None else watches == 1 and sum(requests.values()) == 0
        found.append(Target(what, met, detail))
    return found


def _bound(what: str, value: float, limit: float) -> Target:
    if value < limit:
        return Target(what, True, f"{ms(value)}")
    return Target(what, False, f"{ms(value)}: missed by {ms(value - limit)} ({value / limit:.1f}×)")


# -- the table ---------------------------------------------------------------------------------


def table(report: Report) -> str:
    """The headline table (markdown), aioleader next to kubernetes_asyncio."""
    rows: list[tuple[str, ...]] = []
    default = timing_label(report.default_timing)
    h = report.handover
    k_short = report.crash_short.get("kubernetes_asyncio")
    k_stop = "not run"
    if k_short is not None and k_short.secondary:
        k_stop = (
            f"no release: stopping the leader is a crash failover; stop → new leader "
            f"{latency_cell(k_short, secondary=True)} at {timing_label(k_short.timing)}"
        )
    rows.append(
        (
            "Graceful handover, stop → another candidate leads: p50 / p99",
            timing_label(h.timing) if h else "—",
            latency_cell(h),
            k_stop,
            "p50 < 50 ms, p99 < 200 ms",
        )
    )
    rows.append(
        (
            "… of which release written → another leads: p50 / p99",
            timing_label(h.timing) if h else "—",
            latency_cell(h, secondary=True),
            "no release",
            "",
        )
    )
    for results in (report.crash_short, report.crash_default):
        if not results:
            continue
        any_result = next(iter(results.values()))
        rows.append(
            (
                "Crash failover beyond LD (new leader − last renewal − LD): p50 / p99",
                timing_label(any_result.timing),
                latency_cell(results.get("aioleader")),
                latency_cell(results.get("kubernetes_asyncio")),
                "p99 < 0.2 s",
            )
        )
    if report.rates:
        any_rate = next(iter(report.rates.values()))
        window = f"{any_rate.window_s:.0f} s window"
        for role in ("leader", "follower"):
            cells = []
            for impl in IMPLS:
                rr = report.rates.get(impl)
                cells.append(
                    rate_cell(rr.leader if role == "leader" else rr.follower) if rr else "—"
                )
            rows.append(
                (
                    f"{role.capitalize()} requests/min ({window}; total: by verb)"
                    + (", mean per follower" if role == "follower" else ""),
                    timing_label(any_rate.timing),
                    cells[0],
                    cells[1],
                    "30, no GET" if role == "leader" else "0 (apart from watch re-establishment)",
                )
            )
    if report.cpu:
        cells = []
        for impl in IMPLS:
            c = report.cpu.get(impl)
            per, util = (None, None) if c is None else (c.cpu_per_renewal, c.cpu_util)
            if c is None or per is None or util is None:
                cells.append(f"failed: {c.problem}" if c is not None else "not run")
            else:
                cells.append(f"{per * 1000:.2f} ms ({c.leases:,} leases, {util:.0%} of a core)")
        rows.append(("CPU time per renewal (process CPU / renewals)", default, *cells, "—"))
    if report.scale:
        rows.append(
            (
                "Leases held by one process on one core without a missed renewal",
                default,
                scale_cell(report.scale.get("aioleader")),
                scale_cell(report.scale.get("kubernetes_asyncio")),
                "10,000",
            )
        )
    if report.cpu:
        cells = []
        for impl in IMPLS:
            c = report.cpu.get(impl)
            mem = None if c is None else c.memory_per_lease
            cells.append(f"{mem / 1024:.1f} KiB (RSS Δ / {c.leases:,})" if c and mem else "—")
        rows.append(("Memory per candidate (a leader)", default, *cells, "—"))
    header = ("Measure", "LD/RD/RP (s)", "aioleader", "kubernetes_asyncio", "Target")
    lines = [_row(header), _row(tuple("---" for _ in header))]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def scale_table(report: Report) -> str:
    header = (
        "impl",
        "leases",
        "LD/RD/RP",
        "pool",
        "ramp",
        "terms lost (ramp / window)",
        "longest renew gap (> RD / > LD)",
        "renewals done / asked",
        "CPU (of one core)",
        "CPU / renewal",
        "renew p50 / p99",
        "loop lag p50 / p99 / max",
        "RSS / lease",
        "emulator CPU",
        "verdict",
    )
    lines = [_row(header), _row(tuple("---" for _ in header))]
    runs = [r for impl in IMPLS for r in [report.cpu.get(impl)] if r is not None]
    runs += [r for impl in IMPLS for r in report.scale.get(impl, [])]
    runs += [r for impl in IMPLS for r in report.scale_slow.get(impl, [])]
    if report.default_pool is not None:
        runs.append(report.default_pool)
    for r in runs:
        f = r.figures
        if not f:
            lines.append(_row((r.impl, f"{r.leases:,}", *["—"] * 12, f"failed: {r.problem}")))
            continue
        asked = f.get("renewals_expected") or 0
        lines.append(
            _row(
                (
                    r.impl,
                    f"{r.leases:,}",
                    str(f.get("timing", "15,10,2")).replace(",", "/"),
                    str(f.get("pool", "?")),
                    f"{f.get('ramp_s', 0):.1f} s",
                    f"{f.get('ended_in_ramp', 0)} / {f.get('ended_in_window', 0)}",
                    f"{ms(f.get('max_gap'))} ({f.get('gaps_over_rd', 0):,} / "
                    f"{f.get('gaps_over_ld', 0):,})",
                    f"{f.get('renewals', 0):,} / {asked:,.0f}",
                    f"{r.cpu_util:.0%}" if r.cpu_util is not None else "—",
                    f"{r.cpu_per_renewal * 1000:.2f} ms" if r.cpu_per_renewal else "—",
                    f"{ms(f.get('renew_p50'))} / {ms(f.get('renew_p99'))}",
                    f"{ms(f.get('lag_p50'))} / {ms(f.get('lag_p99'))} / {ms(f.get('lag_max'))}",
                    f"{r.memory_per_lease / 1024:.1f} KiB" if r.memory_per_lease else "—",
                    f"{r.emulator_cpu_util:.0%}" if r.emulator_cpu_util is not None else "—",
                    "held" if r.ok else f"failed: {r.problem}",
                )
            )
        )
    return "\n".join(lines)


def following_table(report: Report) -> str:
    header = (
        "impl",
        "leases followed",
        "watches held at the server",
        "sockets in the process",
        "requests in the window (by verb)",
        "CPU (of one core)",
        "loop lag p99 / max",
        "RSS / lease",
    )
    lines = [_row(header), _row(tuple("---" for _ in header))]
    for impl, r in report.following.items():
        f = r.figures
        if not f:
            lines.append(_row((impl, f"{r.leases:,}", *["—"] * 6)))
            continue
        requests = f.get("server_requests")
        cell = (
            "—"
            if requests is None
            else ", ".join(f"{v} {n:,}" for v, n in sorted(requests.items()) if n) or "none"
        )
        watches = f.get("server_watches")
        lines.append(
            _row(
                (
                    impl,
                    f"{r.leases:,}",
                    "—" if watches is None else str(watches),
                    str(f.get("sockets", "—")),
                    cell,
                    f"{r.cpu_util:.1%}" if r.cpu_util is not None else "—",
                    f"{ms(f.get('lag_p99'))} / {ms(f.get('lag_max'))}",
                    f"{r.memory_per_lease / 1024:.1f} KiB" if r.memory_per_lease else "—",
                )
            )
        )
    return "\n".join(lines)


def rates_table(report: Report) -> str:
    verbs = sorted(
        {v for r in report.rates.values() for v in (*r.leader, *r.follower)},
        key=lambda v: (VERBS.index(v) if v in VERBS else len(VERBS), v),
    )
    header = ("impl", "role", *verbs, "total", "errors in window", "leader changes in window")
    lines = [_row(header), _row(tuple("---" for _ in header))]
    for impl, r in report.rates.items():
        for role, rates in (
            ("leader", r.leader),
            (f"follower (mean of {r.followers})", r.follower),
        ):
            lines.append(
                _row(
                    (
                        impl,
                        role,
                        *(f"{rates.get(v, 0.0):.2f}" for v in verbs),
                        f"{sum(rates.values()):.2f}",
                        str(r.errors),
                        str(r.leader_changes),
                    )
                )
            )
    return "\n".join(lines)


def markdown(report: Report) -> str:
    checks = targets(report)
    out = [
        "# Benchmarks: aioleader and kubernetes_asyncio's elector",
        "",
        "Generated by `bench/run.py`; every figure below was measured in the run described here,",
        "for both implementations, against the same API server with the same timings.",
        "",
        f"- Command: `{report.command}`",
        f"- Date: {report.started} → {report.finished} ({report.duration_s / 60:.1f} min)",
    ]
    out += [f"- {k}: {v}" for k, v in report.machine.items()]
    out += ["", "## Results", "", table(report), "", "## Targets", ""]
    for t in checks:
        mark = "not measured" if t.met is None else ("met" if t.met else "**missed**")
        out.append(f"- {t.what}: {mark} — {t.detail}")
    out += ["", "## Settings", ""]
    out += [f"- {k}: {v}" for k, v in report.settings.items()]
    if report.rates:
        out += ["", "## Requests per minute in steady state", "", rates_table(report)]
    if report.cpu or report.scale:
        out += ["", "## One process, many leases", "", scale_table(report)]
    if report.following:
        out += ["", "## One process following many leases", "", following_table(report)]
    if report.skipped:
        out += ["", "Skipped:", ""] + [f"- {s}" for s in report.skipped]
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    out += ["", "![latency distributions and leases per process](benchmarks.png)", ""]
    return "\n".join(out)


# -- the plot ----------------------------------------------------------------------------------


def plot(report: Report, path: Path) -> bool:
    """Write the figure; False if matplotlib is not installed (``pip install '.[bench]'``)."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = {"aioleader": "tab:blue", "kubernetes_asyncio": "tab:orange"}

    def ecdf(ax: Any, values: list[float], **style: Any) -> None:
        if values:
            xs = sorted(values)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", **style)

    ax = axes[0][0]
    h = report.handover
    if h is not None:
        ecdf(ax, [v * 1000 for v in h.values], color=colors["aioleader"], label="stop → new leader")
        ecdf(
            ax,
            [v * 1000 for v in h.secondary],
            color=colors["aioleader"],
            linestyle="--",
            label="release written → new leader",
        )
        ax.axvline(50, color="grey", linestyle=":", label="target p50 50 ms")
        ax.axvline(200, color="grey", linestyle="-.", label="target p99 200 ms")
        ax.set_title(f"aioleader graceful handover ({timing_label(h.timing)}, n={h.n})")
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction of samples")
    ax.set_xscale("log")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[0][1]
    for results, style in ((report.crash_short, "-"), (report.crash_default, "--")):
        for impl, lat in results.items():
            ecdf(
                ax,
                lat.values,
                color=colors[impl],
                linestyle=style,
                label=f"{impl} {timing_label(lat.timing)} (n={lat.n})",
            )
    ax.axvline(0.2, color="grey", linestyle=":", label="target: LD + 0.2 s")
    ax.set_title("crash failover beyond LD (new leader − last renewal − LD)")
    ax.set_xlabel("s")
    ax.set_ylabel("fraction of samples")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1][0]
    for impl in IMPLS:
        runs = sorted(
            [r for r in [report.cpu.get(impl), *report.scale.get(impl, [])] if r and r.figures],
            key=lambda r: r.leases,
        )
        if not runs:
            continue
        xs = [r.leases for r in runs]
        ax.plot(
            xs,
            [r.get("renew_p99") for r in runs],
            "o-",
            color=colors[impl],
            label=f"{impl} renew p99",
        )
        ax.plot(
            xs,
            [r.get("lag_p99") for r in runs],
            "s--",
            color=colors[impl],
            label=f"{impl} loop lag p99",
        )
        for r in runs:
            if not r.ok:
                ax.annotate("missed", (r.leases, r.get("renew_p99") or 0), color="red", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"leases held by one process ({timing_label(report.default_timing)})")
    ax.set_ylabel("s")
    ax.set_title("leases per process: renewal latency and event-loop lag")
    ax.legend(fontsize=8)
    ax2 = ax.twinx()
    for impl in IMPLS:
        runs = sorted(
            [r for r in [report.cpu.get(impl), *report.scale.get(impl, [])] if r and r.figures],
            key=lambda r: r.leases,
        )
        if runs:
            ax2.plot(
                [r.leases for r in runs],
                [r.cpu_util for r in runs],
                ":",
                color=colors[impl],
                alpha=0.6,
            )
    ax2.set_ylabel("CPU, fraction of one core (dotted)")

    ax = axes[1][1]
    verbs = sorted(
        {v for rr in report.rates.values() for v in (*rr.leader, *rr.follower)},
        key=lambda v: (VERBS.index(v) if v in VERBS else len(VERBS), v),
    )
    bars = [
        (impl, role) for impl in IMPLS if impl in report.rates for role in ("leader", "follower")
    ]
    width = 0.8 / max(1, len(verbs))
    for j, verb in enumerate(verbs):
        heights = []
        for impl, role in bars:
            rr = report.rates[impl]
            heights.append((rr.leader if role == "leader" else rr.follower).get(verb, 0.0))
        drawn = ax.bar([i + j * width for i in range(len(bars))], heights, width, label=verb)
        ax.bar_label(drawn, fmt="%.1f", fontsize=7)
    ax.set_xticks([i + width * (len(verbs) - 1) / 2 for i in range(len(bars))])
    ax.set_xticklabels([f"{impl}\n{role}" for impl, role in bars], fontsize=8)
    ax.axhline(30, color="grey", linestyle=":", label="target leader: 30")
    ax.set_ylabel("requests per minute")
    ax.set_title(f"steady-state requests per minute ({timing_label(report.default_timing)})")
    ax.legend(fontsize=8)

    fig.suptitle(f"aioleader vs kubernetes_asyncio — {report.started}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
