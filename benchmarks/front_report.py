"""The speed-fidelity front's verdict, tables and chart, from the results ``benchmarks.bench_front``
measures (its committed JSON): which settings LazyCache alone dominates, the Markdown tables of
docs/BENCHMARKS.md, and docs/images/front.png."""
from __future__ import annotations

import math
from pathlib import Path

TARGET_SPEEDUP = 1.5  # issue 14: a pack setting not dominated by LazyCache at this estimated speedup or more


def interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """Piecewise-linear y(x) through points sorted by x; None outside their range."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if points and x == points[0][0]:
        return points[0][1]
    return None


FEWER = "fewer-steps"  # benchmarks.front_fewer.FAMILY
BASELINE_FAMILIES = ("unpatched", "lazycache", FEWER, "easycache", "analysis")


def baseline_points(rows: list[dict], family: str, model: str = "sd3-medium") -> list[tuple[float, float]]:
    """(estimated speedup, mean PSNR) of a baseline's measured settings with a finite PSNR."""
    key = f"speedup_{model}"
    return sorted((r[key], r["psnr_mean"]) for r in rows if r["family"] == family and math.isfinite(r["psnr_mean"]))


def against(points: list[tuple[float, float]], speed: float, psnr: float) -> dict:
    """A setting (speed, PSNR) against a baseline's points: the baseline's PSNR at that speed, interpolated
    linearly in the estimated speedup between its two neighbouring measured points, and the margin (this PSNR
    minus that). Slower than the baseline's slowest point, the baseline keeps at least that point's PSNR (more
    steps, or a lower threshold, changes the image less): the margin is then an upper bound (``at_most``).
    Faster than its fastest point: no figure (``outside``)."""
    at = interpolate(points, speed)
    if at is not None:
        return {"psnr": at, "margin": psnr - at, "at_most": None}
    if points and speed < points[0][0]:
        return {"psnr": None, "margin": None, "at_most": psnr - points[0][1]}
    return {"psnr": None, "margin": None, "at_most": None}


def margin_or_bound(entry: dict) -> float | None:
    """The measured margin, else the bound (a setting below every point of the baseline), else None."""
    return entry["margin"] if entry["margin"] is not None else entry["at_most"]


def front_verdict(rows: list[dict], model: str = "sd3-medium", at_least: float = TARGET_SPEEDUP) -> list[dict]:
    """Each pack setting at an estimated speedup >= ``at_least``: its PSNR minus LazyCache's at the same
    estimated speedup (interpolated along the sweep's measured points with a finite PSNR), and LazyCache's
    speedup at the same PSNR. Below the sweep's slowest finite point (LazyCache at its lowest thresholds
    skips nothing and matches unpatched exactly), LazyCache keeps at least that point's PSNR: the margin is
    then an upper bound (``margin_at_most_db``). The same against fewer steps (``fewer_*``: the unpatched model
    at k of S steps, :func:`against`) where the front measured it."""
    key = f"speedup_{model}"
    lazy = [(r[key], r["psnr_mean"]) for r in rows if r["family"] == "lazycache" and math.isfinite(r["psnr_mean"])]
    fewer = baseline_points(rows, FEWER, model)
    by_psnr = [(p, x) for x, p in lazy]
    out = []
    for r in rows:
        if r["family"] in BASELINE_FAMILIES or r[key] < at_least:
            continue
        lazy_psnr = interpolate(lazy, r[key])
        slowest = min(lazy) if lazy else None  # LazyCache's slowest skipping point (speed, PSNR)
        bound = slowest[1] if lazy_psnr is None and slowest is not None and r[key] < slowest[0] else None
        out.append({"name": r["name"], "family": r["family"], "speedup": r[key], "psnr": r["psnr_mean"],
                    "lazycache_psnr_at_speedup": lazy_psnr,
                    "margin_db": None if lazy_psnr is None else r["psnr_mean"] - lazy_psnr,
                    "margin_at_most_db": None if bound is None else r["psnr_mean"] - bound,
                    "lazycache_speedup_at_psnr": interpolate(by_psnr, r["psnr_mean"]),
                    "dominated": None if lazy_psnr is None else r["psnr_mean"] <= lazy_psnr})
        if fewer:
            vs = against(fewer, r[key], r["psnr_mean"])
            out[-1].update({"fewer_psnr_at_speedup": vs["psnr"], "margin_fewer_db": vs["margin"],
                            "margin_fewer_at_most_db": vs["at_most"]})
    return sorted(out, key=lambda v: -(v["margin_db"] if v["margin_db"] is not None else -1e9))


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats in both speed and PSNR, by speed."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return sorted(front)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| setting | calls run | MLP tokens | attention tokens | est. SD3-medium 1024 | est. SD3.5-large 1024 "
             "| PSNR dB mean (min) | SSIM mean |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        psnr = "identical" if not math.isfinite(r["psnr_mean"]) else f"{r['psnr_mean']:.2f} ({r['psnr_min']:.2f})"
        lines.append(f"| {r['name']} | {r['model_calls']}/{r['reference_model_calls']} | "
                     f"{100 * r['mlp_tokens_vs_unpatched']:.0f}% | {100 * r['attn_tokens_vs_unpatched']:.0f}% | "
                     f"{r['speedup_sd3-medium']:.2f}x | {r['speedup_sd3.5-large']:.2f}x | {psnr} | "
                     f"{r['ssim_mean']:.3f} |")
    return "\n".join(lines)


def analysis_table(rows: list[dict]) -> str:
    """Error per compute saved: mean MSE against unpatched (images in [0, 1]) per percent of SD3-medium
    FLOPs saved, for the settings that merge only one phase, one third of the steps or one block."""
    lines = ["| SDTM balanced, merging only on | est. SD3-medium | FLOPs saved | PSNR dB mean (min) | MSE x 1e4 "
             "| MSE x 1e4 per % saved |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["family"] not in ("analysis", "sdtm-preset") or not math.isfinite(r["psnr_mean"]):
            continue
        saved = 100 * (1 - 1 / r["speedup_sd3-medium"])
        lines.append(f"| {r['name']} | {r['speedup_sd3-medium']:.2f}x | {saved:.1f}% | {r['psnr_mean']:.2f} "
                     f"({r['psnr_min']:.2f}) | {1e4 * r['mse_mean']:.1f} | {1e4 * r['mse_mean'] / saved:.2f} |")
    return "\n".join(lines)


SDTM_ALONE = ("sdtm-preset", "sdtm-sweep", "sdtm-tuned", "sdtm-ideas", "analysis")


def preset_dominance(rows: list[dict], model: str = "sd3-medium") -> list[str]:
    """For each preset, the measured settings that dominate it (at least its estimated speedup and mean PSNR,
    one of them higher): SDTM alone (any node setting), and SDTM stacked with LazyCache."""
    key = f"speedup_{model}"
    out = []
    for p in (r for r in rows if r["family"] == "sdtm-preset"):
        def beats(r):
            return (r is not p and r[key] >= p[key] and r["psnr_mean"] >= p["psnr_mean"]
                    and (r[key], r["psnr_mean"]) != (p[key], p["psnr_mean"]))
        alone = [r["name"] for r in rows if r["family"] in SDTM_ALONE and beats(r)]
        stacked = [r["name"] for r in rows if r["family"].startswith("stack") and beats(r)]
        out.append(f"{p['name']} ({p[key]:.2f}x, {p['psnr_mean']:.2f} dB): "
                   f"dominated by SDTM alone: {', '.join(alone) or 'none'}; by a stack: {', '.join(stacked) or 'none'}")
    return out


DENSITY_SETTINGS = ("preset quality", "preset balanced", "preset fast", "preset reference")
STACKS = ("stack sdtm->lazy", "stack lazy->sdtm")


def best_stack(verdict: dict[str, dict]) -> dict | None:
    """The stacked setting (SDTM with LazyCache, either order) with the best measured margin in a front's verdict
    (name -> entry of :func:`front_verdict`), or None."""
    stacks = [v for v in verdict.values() if v["family"] in STACKS and v["margin_db"] is not None]
    return max(stacks, key=lambda v: v["margin_db"]) if stacks else None


def density_table(fronts: dict[str, list[dict]]) -> str:
    """The named presets and the best stack of each front (label -> its rows), side by side: speed, PSNR and
    the margin against LazyCache at that speed (``<=`` where it is a bound below LazyCache's slowest skipping
    point)."""
    verdicts = {label: {v["name"]: v for v in front_verdict(rows, at_least=1.0)} for label, rows in fronts.items()}
    names = list(DENSITY_SETTINGS)
    for verdict in verdicts.values():
        best = best_stack(verdict)
        if best is not None and best["name"] not in names:
            names.append(best["name"])
    head = "| setting | " + " | ".join(f"{label}: est. speedup, PSNR dB, vs LazyCache" for label in fronts) + " |"
    lines = [head, "|---|" + "---|" * len(fronts)]
    for name in names:
        cells = []
        for verdict in verdicts.values():
            v = verdict.get(name)
            if v is None:
                cells.append("-")
                continue
            margin = (f"{v['margin_db']:+.1f} dB" if v["margin_db"] is not None else
                      f"<= {v['margin_at_most_db']:+.1f} dB" if v.get("margin_at_most_db") is not None else "outside")
            cells.append(f"{v['speedup']:.2f}x, {v['psnr']:.2f}, {margin}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def front_lines(verdict: list[dict]) -> list[str]:
    out = []
    for v in verdict:
        if v["margin_db"] is not None:
            lazy = f"LazyCache {v['lazycache_psnr_at_speedup']:.2f} dB there, margin {v['margin_db']:+.2f} dB"
        elif v.get("margin_at_most_db") is not None:
            lazy = f"below the sweep's slowest finite point: margin at most {v['margin_at_most_db']:+.2f} dB"
        else:
            lazy = "outside the sweep"
        if v.get("margin_fewer_db") is not None:
            lazy += f"; fewer steps {v['fewer_psnr_at_speedup']:.2f} dB there, margin {v['margin_fewer_db']:+.2f} dB"
        elif v.get("margin_fewer_at_most_db") is not None:
            lazy += f"; below fewer steps' slowest point: margin at most {v['margin_fewer_at_most_db']:+.2f} dB"
        out.append(f"{v['name']}: {v['speedup']:.2f}x, {v['psnr']:.2f} dB; {lazy}")
    return out


FAMILY_STYLE = {FEWER: ("#000000", "P", "fewer steps (unpatched, k of S steps)"),
                "lazycache": ("#1f77b4", "o", "core LazyCache (threshold sweep)"),
                "sdtm-preset": ("#d62728", "s", "SDTM presets"),
                "sdtm-sweep": ("#ff9896", ".", "SDTM Advanced sweeps (balanced, one knob)"),
                "sdtm-tuned": ("#9467bd", "D", "SDTM light (searched)"),
                "sdtm-ideas": ("#17becf", "*", "SDTM Advanced error-reduction options"),
                "tome": ("#2ca02c", "^", "plain ToMe"),
                "stack sdtm->lazy": ("#8c564b", "v", "SDTM -> LazyCache"),
                "stack lazy->sdtm": ("#e377c2", "<", "LazyCache -> SDTM"),
                "easycache": ("#7f7f7f", "x", "core EasyCache (skips nothing on SD3)"),
                "analysis": ("#bcbd22", "+", "SDTM balanced on one phase or one block only")}


def draw_chart(results: dict[str, dict], png: Path) -> None:
    """One panel per front (three a row): estimated SD3-medium speedup vs mean PSNR; each family's points and
    its Pareto front as the curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = min(3, len(results))
    rows_ = -(-len(results) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(7.5 * cols, 5.5 * rows_), dpi=100, squeeze=False)
    for ax in axes.flat[len(results):]:
        ax.set_visible(False)
    for ax, (fixture, data) in zip(axes.flat, results.items()):
        rows = [r for r in data["results"] if math.isfinite(r["psnr_mean"])]
        for family, (color, marker, label) in FAMILY_STYLE.items():
            pts = [(r["speedup_sd3-medium"], r["psnr_mean"]) for r in rows if r["family"] == family]
            if not pts:
                continue
            ax.scatter(*zip(*pts), color=color, marker=marker, s=30, alpha=0.8, zorder=3)
            ax.plot(*zip(*pareto(pts)), color=color, label=label, lw=1.5)
        for r in rows:
            if r["family"] == "sdtm-preset":
                ax.annotate(r["name"].replace("preset ", ""), (r["speedup_sd3-medium"], r["psnr_mean"]),
                            textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.axvline(TARGET_SPEEDUP, color="black", lw=0.6, ls="--")
        setup = data["setup"]
        what = f"{setup['pass']} pass d={setup['denoise']:g}, " if "pass" in setup else ""
        ax.set_title(f"{what}{setup['fixture']} fixture ({setup['depth']} blocks, {setup['size_px']} px), "
                     f"{setup['steps']} steps {setup['sampler']}/{setup['scheduler']}, {setup['seeds']} seeds",
                     fontsize=9)
        ax.set_xlabel("estimated speedup, SD3-medium 1024x1024 (FLOP model of the counted tokens)")
        ax.set_ylabel("PSNR vs unpatched (dB, mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
