"""The rows, terminal table, verdict line, chart and files of `python -m commands.evaluate front`
(``commands.eval_front`` measures). Both files are written under temporary names and moved into place
together at the end, so a run that stops leaves no half-written front."""
from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from .eval_sampling import PROG

FRONT_JSON, FRONT_PNG = "front.json", "front.png"
KIND_STYLE = {  # kind: (colour, marker, legend)
    "fewer_steps": ("#2ca02c", "o", "unpatched, fewer steps"),
    "lazycache": ("#1f77b4", "s", "core LazyCache"),
    "sdtm": ("#d62728", "D", "SDTM presets"),
    "stack": ("#8c564b", "v", "SDTM balanced -> LazyCache"),
}
SWEEPS = ("fewer_steps", "lazycache")  # kinds drawn as a line through their knob's values


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else None


def report_rows(entries: list, cuda: bool) -> list[dict]:
    """One row per setting: measured seconds and speedup against the reference's, fidelity against it."""
    reference_seconds = statistics.median(entries[0].seconds)
    rows = []
    for entry in entries:
        seconds = statistics.median(entry.seconds)
        per_caption = [{**m, "identical": m["psnr"] == math.inf,
                        "psnr": m["psnr"] if math.isfinite(m["psnr"]) else None} for m in entry.metrics]
        identical = sum(m["identical"] for m in per_caption)
        row = {"name": entry.name, "kind": entry.kind, "seconds": seconds, "seconds_all": entry.seconds,
               "speedup": reference_seconds / seconds,
               # mean over the captions whose image differs from the reference (None: all identical)
               "psnr": _mean([m["psnr"] for m in per_caption]), "identical": identical,
               "ssim": _mean([m["ssim"] for m in per_caption]),
               "lpips": _mean([m["lpips"] for m in per_caption]), "clip_score": entry.clip_score,
               "peak_memory_mib": max(entry.peaks) / 2**20 if cuda else None,
               "steps": entry.steps, "settings": entry.params, "per_caption": per_caption}
        if entry.kind == "fewer_steps":
            row["step_cost"] = entry.params["step_cost"]
        rows.append(row)
    rows[0]["identical"] = len(rows[0]["per_caption"])  # the reference against itself
    return rows


def _fidelity(row: dict) -> float:
    """PSNR for ranking: +inf where every image equals the reference's."""
    return math.inf if row["psnr"] is None else row["psnr"]


def best_at_each_speed(rows: list[dict]) -> list[dict]:
    """The settings faster than the reference that no faster setting beats in PSNR, by speed: the one that kept
    the most of the image at each speed up to its own."""
    faster = [r for r in rows if r["kind"] != "reference" and r["speedup"] > 1.0]
    front, best = [], -math.inf
    for row in sorted(faster, key=lambda r: (-r["speedup"], -_fidelity(r))):
        if _fidelity(row) > best:
            front.append(row)
            best = _fidelity(row)
    return sorted(front, key=lambda r: r["speedup"])


def _db(row: dict) -> str:
    return "identical" if row["psnr"] is None else f"{row['psnr']:.2f} dB"


def verdict_line(rows: list[dict]) -> str:
    front = best_at_each_speed(rows)
    if not front:
        return "No setting ran faster than the unpatched reference on this model and device."
    parts, low = [], 1.0
    for row in front:
        parts.append(f"{low:.2f}x-{row['speedup']:.2f}x: {row['name']} ({_db(row)})")
        low = row["speedup"]
    return "Kept the most of the image (PSNR vs unpatched) at each measured speed on this model: " + "; ".join(parts)


def table(rows: list[dict]) -> str:
    def cell(value, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"
    head = ("setting", "kind", "s/image", "speedup", "PSNR dB", "SSIM", "LPIPS", "CLIP", "peak MiB")
    body = [(r["name"], r["kind"], f"{r['seconds']:.3f}", f"{r['speedup']:.2f}x",
             "reference" if r["kind"] == "reference" else "identical" if r["psnr"] is None else f"{r['psnr']:.2f}",
             cell(r["ssim"], 4), cell(r["lpips"], 4), cell(r["clip_score"], 2), cell(r["peak_memory_mib"], 0))
            for r in rows]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
    lines = ["  ".join(text.ljust(width) if i < 2 else text.rjust(width) for i, (text, width) in
                       enumerate(zip(line, widths))) for line in (head, *body)]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def draw(rows: list[dict], setup: dict, png: Path) -> None:
    """PSNR and SSIM against the measured speedup, one series per kind; fewer steps and LazyCache as lines
    through their step counts and thresholds (settings whose images equal the reference's on the top edge)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), dpi=100)
    finite = [r["psnr"] for r in rows if r["psnr"] is not None]
    top = (max(finite) + 3.0) if finite else 60.0
    for ax, key, label in ((axes[0], "psnr", "PSNR vs unpatched (dB, mean over captions)"),
                           (axes[1], "ssim", "SSIM vs unpatched (mean over captions)")):
        for kind, (colour, marker, legend) in KIND_STYLE.items():
            points = [(r["speedup"], top if key == "psnr" and r["psnr"] is None else r[key], r["name"])
                      for r in rows if r["kind"] == kind]  # in the order of the knob: steps, threshold
            if not points:
                continue
            xs, ys, names = zip(*points)
            ax.plot(xs, ys, color=colour, marker=marker, lw=1.2 if kind in SWEEPS else 0, ms=6, label=legend)
            for x, y, name in points:
                ax.annotate(name.replace("preset ", "").replace("fewer steps ", ""), (x, y),
                            textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.axvline(1.0, color="black", lw=0.7, ls=":", label="unpatched reference (1x)")
        if key == "psnr":
            ax.axhline(top, color="grey", lw=0.5, ls="--")
            ax.annotate("identical to the reference", (ax.get_xlim()[0], top), textcoords="offset points",
                        xytext=(2, -10), fontsize=7, color="grey")
        ax.set_xlabel(f"measured speedup (sampler seconds per image, {setup['device']})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    model = setup["model"].get("fixture") or setup["model"].get("checkpoint") or setup["model"].get("unet")
    fig.suptitle(f"{Path(str(model)).name}: {setup['width']}x{setup['height']}, {setup['steps']} steps "
                 f"{setup['sampler']}/{setup['scheduler']}, cfg {setup['cfg']}, {len(setup['captions'])} caption(s)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(png, format="png")
    plt.close(fig)


def write_outputs(output: Path, setup: dict, rows: list[dict]) -> None:
    """front.png and front.json into ``output`` (temporary names first, moved together at the end), the
    table and the verdict line on the terminal."""
    partial_json = output / f".{FRONT_JSON}.{os.getpid()}.partial"
    partial_png = output / f".{FRONT_PNG}.{os.getpid()}.partial"
    chart = {"file": FRONT_PNG, "reason": None}
    try:
        try:
            import matplotlib  # noqa: F401  (a dev dependency; the pack itself needs only torch, numpy, Pillow)
        except ImportError:
            chart = {"file": None, "reason": "not drawn: matplotlib is not installed (pip install matplotlib)"}
        else:
            draw(rows, setup, partial_png)
        line = verdict_line(rows)
        report = {"setup": setup, "chart": chart, "verdict": line,
                  "best_at_each_speed": [r["name"] for r in best_at_each_speed(rows)], "rows": rows}
        partial_json.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        if chart["file"]:
            os.replace(partial_png, output / FRONT_PNG)
        os.replace(partial_json, output / FRONT_JSON)
    finally:
        partial_json.unlink(missing_ok=True)
        partial_png.unlink(missing_ok=True)
    print(table(rows))
    print(line)
    print(f"{PROG} front: {len(rows)} settings on {setup['device']} in {setup['seconds_total']:.0f} s -> "
          f"{output / FRONT_JSON}" + (f", {output / FRONT_PNG}" if chart["file"] else f" ({chart['reason']})"),
          flush=True)
