"""Every committed front against the two baselines a user has without SDTM: fewer steps (the unpatched model at
k of S steps) and core LazyCache. The margins table of docs/BENCHMARKS.md, the fixtures table of the README,
the search for a setting that beats fewer steps (issue 29, item 5) and the facts the docs pages' advice is
checked against (``commands.node_docs``), all from the committed JSON.

A setting's margin against a baseline is its mean PSNR minus the baseline's PSNR at the same estimated
SD3-medium speedup, the baseline interpolated linearly in the speedup between its two neighbouring measured
points (``front_report.against``); slower than the baseline's slowest point the margin is a bound ("<=").

    .venv/bin/python -m benchmarks.front_margins            # the tables and the search, from docs/benchmarks
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks.front_fewer import variant_fronts
from benchmarks.front_report import FEWER, STACKS, against, baseline_points, margin_or_bound

JSON_DIR = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
KEY = "speedup_sd3-medium"
REGIMES = ("base", "few", "pass")  # 20-50 steps from noise; 4-8 steps; a second pass (hires / img2img)
REGIME_TEXT = {"base": "base pass, 20-50 steps", "few": "4-8 steps", "pass": "hires / img2img pass"}
PRESETS = ("preset reference", "preset quality", "preset balanced", "preset fast", "preset turbo")
SDTM_FAMILIES = ("sdtm-preset", "sdtm-sweep", "sdtm-tuned", "sdtm-ideas", "analysis", "tome") + STACKS
WIN_DB, WIN_SPEED = 1.0, 1.3  # item 5: a setting kept if it keeps >= 1 dB more than fewer steps at >= 1.3x


def load_fronts(folder: Path = JSON_DIR) -> dict[str, dict]:
    """The committed fronts that measured fewer steps, by file stem (front_<name>), and each of their sampler
    variants that did (``bench_front --variants``) as a front of its own, named <name>@<sampler/scheduler/steps>."""
    out = {}
    for path in sorted(folder.glob("front_*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        name = path.stem.removeprefix("front_")
        if any(r["family"] == FEWER for r in data["results"]):
            out[name] = data
        for key, front in variant_fronts(name, data).items():
            if any(r["family"] == FEWER for r in front["results"]):
                out[key] = front
    return out


def regime(data: dict) -> str:
    setup = data["setup"]
    return "pass" if "pass" in setup else "few" if setup["steps"] <= 8 else "base"


def label(data: dict) -> str:
    s = data["setup"]
    what = (f"{s['pass']} pass d={s['denoise']:g}" if "pass" in s else
            f"{s['fixture']}{' 64x64 tok' if s.get('size_px') == 256 and 'pass' not in s else ''}")
    return f"{what}, {s['steps']} steps {s['sampler']}/{s['scheduler']}, {s['seeds']} seeds"


def vs(rows: list[dict], row: dict) -> dict:
    """A row against fewer steps and LazyCache at its speed."""
    speed, psnr = row[KEY], row["psnr_mean"]
    return {"name": row["name"], "family": row["family"], "speedup": speed, "psnr": psnr,
            "fewer": against(baseline_points(rows, FEWER), speed, psnr),
            "lazy": against(baseline_points(rows, "lazycache"), speed, psnr)}


def best_stack(rows: list[dict]) -> dict | None:
    """The stack with the best margin (or bound) against fewer steps."""
    stacks = [vs(rows, r) for r in rows if r["family"] in STACKS and math.isfinite(r["psnr_mean"])]
    stacks = [s for s in stacks if margin_or_bound(s["fewer"]) is not None]
    return max(stacks, key=lambda s: margin_or_bound(s["fewer"])) if stacks else None


def settings_vs_fewer(rows: list[dict], families=SDTM_FAMILIES) -> list[dict]:
    return [vs(rows, r) for r in rows if r["family"] in families and math.isfinite(r["psnr_mean"])]


def lazy_vs_fewer(rows: list[dict]) -> list[dict]:
    """LazyCache's skipping settings against fewer steps at their speed."""
    return [vs(rows, r) for r in rows
            if r["family"] == "lazycache" and r[KEY] > 1.001 and math.isfinite(r["psnr_mean"])]


def cell(entry: dict) -> str:
    if entry["margin"] is not None:
        return f"{entry['margin']:+.1f} dB"
    return f"<= {entry['at_most']:+.1f} dB" if entry["at_most"] is not None else "outside"


def margins_table(fronts: dict[str, dict]) -> str:
    """Every preset and the best stack of each front: speed, PSNR, margin against fewer steps and against
    LazyCache at that speed."""
    lines = ["| front | setting | est. speedup | PSNR dB | vs fewer steps | vs LazyCache |",
             "|---|---|---|---|---|---|"]
    for name, data in fronts.items():
        rows = data["results"]
        entries = [vs(rows, r) for r in rows if r["name"] in PRESETS]
        best = best_stack(rows)
        entries += [best] if best else []
        for e in entries:
            lines.append(f"| {label(data)} | {e['name']} | {e['speedup']:.2f}x | {e['psnr']:.2f} | {cell(e['fewer'])} "
                         f"| {cell(e['lazy'])} |")
    return "\n".join(lines)


def baselines_table(fronts: dict[str, dict]) -> str:
    """Fewer steps and LazyCache on each front: the points, and LazyCache's margin against fewer steps."""
    lines = ["| front | fewer steps: k of S, est. speedup, PSNR dB | LazyCache: threshold, est. speedup, PSNR dB, "
             "vs fewer steps |", "|---|---|---|"]
    for data in fronts.values():
        rows = data["results"]
        fewer = "; ".join(f"{r['params']['steps']}: {r[KEY]:.2f}x {r['psnr_mean']:.1f}" for r in rows
                          if r["family"] == FEWER)
        lazy = "; ".join(f"{e['name'].split()[-1]}: {e['speedup']:.2f}x {e['psnr']:.1f} ({cell(e['fewer'])})"
                         for e in lazy_vs_fewer(rows)) or "skips nothing"
        lines.append(f"| {label(data)} | {fewer} | {lazy} |")
    return "\n".join(lines)


def winners(fronts: dict[str, dict], at_least_db: float = WIN_DB, speed: float = WIN_SPEED) -> list[dict]:
    """Item 5: SDTM settings (any family, stacks included) that keep >= ``at_least_db`` more than fewer steps at
    >= ``speed`` (a measured margin, never a bound), per front."""
    out = []
    for name, data in fronts.items():
        for e in settings_vs_fewer(data["results"]):
            if e["speedup"] >= speed and e["fewer"]["margin"] is not None and e["fewer"]["margin"] >= at_least_db:
                out.append({**e, "front": name})
    return out


def closest(fronts: dict[str, dict], speed: float = WIN_SPEED) -> dict[str, dict]:
    """Per front: the SDTM setting at >= ``speed`` closest to fewer steps (the best measured margin)."""
    out = {}
    for name, data in fronts.items():
        measured = [e for e in settings_vs_fewer(data["results"]) if e["speedup"] >= speed
                    and e["fewer"]["margin"] is not None]
        if measured:
            out[name] = max(measured, key=lambda e: e["fewer"]["margin"])
    return out


def facts(fronts: dict[str, dict]) -> dict:
    """Per regime, what the advice rests on: the presets' margins (or bounds) against fewer steps, the best stack's,
    LazyCache's margins against fewer steps, whether any SDTM setting is ahead of fewer steps, and the presets
    measured ahead of it (``exceptions``: margin, name, front, speedup, setup)."""
    out = {}
    for reg in REGIMES:
        chosen = {n: d for n, d in fronts.items() if regime(d) == reg}
        if not chosen:
            continue
        presets, stacks, lazy, ahead, lazy_speed, bounds, exceptions = [], [], [], [], 1.0, set(), []
        for name, data in chosen.items():
            rows = data["results"]
            for r in rows:
                if r["name"] in PRESETS and (reg != "base" or r["name"] != "preset turbo"):
                    e = vs(rows, r)
                    if margin_or_bound(e["fewer"]) is not None:
                        presets.append((margin_or_bound(e["fewer"]), e["name"], name))
                        if e["fewer"]["margin"] is None:
                            bounds.add((e["name"], name))
                        elif e["fewer"]["margin"] >= 0:
                            exceptions.append({"margin": e["fewer"]["margin"], "name": e["name"], "front": name,
                                               "speedup": e["speedup"], "setup": data["setup"]})
            best = best_stack(rows)
            if best is not None:
                stacks.append((margin_or_bound(best["fewer"]), best["name"], name))
                if best["fewer"]["margin"] is None:
                    bounds.add((best["name"], name))
            lazy += [(e["fewer"]["margin"], e["speedup"], name) for e in lazy_vs_fewer(rows)
                     if e["fewer"]["margin"] is not None]
            lazy_speed = max([lazy_speed] + [r[KEY] for r in rows if r["family"] == "lazycache"])
            ahead += [(margin_or_bound(e["fewer"]), e["name"], name) for e in settings_vs_fewer(rows)
                      if margin_or_bound(e["fewer"]) is not None and margin_or_bound(e["fewer"]) > 0]
        out[reg] = {"fronts": sorted(chosen), "presets": sorted(presets), "stacks": sorted(stacks), "bounds": bounds,
                    "lazy": sorted(lazy), "lazy_speed": lazy_speed, "sdtm_ahead": sorted(ahead, reverse=True),
                    "exceptions": sorted(exceptions, key=lambda e: -e["margin"])}
    return out


README_FRONTS = ("photo", "deep", "dense-32", "dense", "photo-8steps", "photo-4steps", "pass-hires-d0.35-10steps",
                 "pass-hires-d0.5-10steps", "pass-hires-d0.35-20steps", "pass-hires-d0.5-20steps",
                 "pass-img2img-d0.5-10steps")
README_SPEEDS = (1.5, 2.0, 2.5)  # the fewer-steps and LazyCache points nearest these speeds


def nearest(rows: list[dict], family: str, speeds=README_SPEEDS) -> list[dict]:
    points = [r for r in rows if r["family"] == family and r[KEY] > 1.001 and math.isfinite(r["psnr_mean"])]
    out = []
    for speed in speeds:
        if points:
            best = min(points, key=lambda r: abs(r[KEY] - speed))
            if best not in out:
                out.append(best)
    return out


def readme_table(fronts: dict[str, dict], names=README_FRONTS) -> str:
    """The README's table: per front (a row), fewer steps and LazyCache near 1.5x / 2x / 2.5x, and the quality,
    balanced and fast presets with their margin against fewer steps at their speed."""
    lines = ["| front | fewer steps: k of S, est. speedup, PSNR | core LazyCache: threshold, est. speedup, PSNR | "
             "SDTM quality / balanced / fast: est. speedup, PSNR (vs fewer steps) |", "|---|---|---|---|"]
    for name in names:
        if name not in fronts:
            continue
        rows = fronts[name]["results"]
        fewer = "; ".join(f"{r['params']['steps']} of {r['params']['of']}: {r[KEY]:.2f}x, {r['psnr_mean']:.1f} dB"
                          for r in nearest(rows, FEWER))
        lazy = "; ".join(f"{r['name'].split()[-1]}: {r[KEY]:.2f}x, {r['psnr_mean']:.1f} dB"
                         for r in nearest(rows, "lazycache")) or "skips nothing"
        presets = " / ".join(f"{e['speedup']:.2f}x {e['psnr']:.1f} dB ({cell(e['fewer'])})"
                             for e in (vs(rows, r) for n in ("quality", "balanced", "fast") for r in rows
                                       if r["name"] == f"preset {n}"))
        lines.append(f"| {label(fronts[name])} | {fewer} | {lazy} | {presets} |")
    return "\n".join(lines)


def search_text(fronts: dict[str, dict]) -> str:
    found = winners(fronts)
    lines = [f"- {e['front']}: {e['name']} {e['speedup']:.2f}x {e['psnr']:.2f} dB, {cell(e['fewer'])}" for e in found]
    if not found:
        lines = [f"None on any front. The closest at >= {WIN_SPEED:g}x, per front:"]
        lines += [f"- {name}: {e['name']}, {e['speedup']:.2f}x, {e['psnr']:.2f} dB, {cell(e['fewer'])} against fewer "
                  "steps" for name, e in closest(fronts).items()]
    return "\n".join(lines)


ADVICE_CHECK = JSON_DIR / "advice_check.json"


def advice_check_text(fronts: dict[str, dict]) -> str:
    """The held-out check's run (``benchmarks.advice_check``, its committed JSON): its margins and verdicts."""
    if not ADVICE_CHECK.is_file():
        return "(not run yet: python -m benchmarks.advice_check)"
    check = json.loads(ADVICE_CHECK.read_text(encoding="utf-8"))
    lines = [f"`{check['command']}`:", "", baselines_table(check["fronts"]), "", margins_table(check["fronts"]), ""]
    from commands.node_docs_advice import advice_problems  # the advice's own check, on the held-out run
    found = facts(check["fronts"])
    for regime in found:
        told = advice_problems(found, [regime], exceptions=False) or ["agrees with the advice"]
        lines += [f"- {regime}: {line}" for line in told]
    return "\n".join(lines)


TABLES = {"readme": readme_table, "baselines": baselines_table, "margins": margins_table, "search": search_text,
          "advice_check": advice_check_text}
DOCS = (Path(__file__).resolve().parents[1] / "README.md",
        Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md")


def write_docs(fronts: dict[str, dict], files=DOCS) -> list[Path]:
    """Replace what lies between each ``<!-- front_margins:NAME -->`` and ``<!-- /front_margins:NAME -->`` in the
    docs with TABLES[NAME] made from the committed fronts."""
    written = []
    for path in files:
        content = original = path.read_text(encoding="utf-8")
        for name, make in TABLES.items():
            start, end, at = f"<!-- front_margins:{name} -->", f"<!-- /front_margins:{name} -->", 0
            while (i := content.find(start, at)) != -1:
                j = content.index(end, i)
                block = f"{start}\n\n{make(fronts)}\n\n"
                content = content[:i] + block + content[j:]
                at = i + len(block) + len(end)
        if content != original:
            path.write_text(content, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=JSON_DIR)
    parser.add_argument("--write-docs", action="store_true",
                        help="rewrite the <!-- front_margins:NAME --> blocks of README.md and docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    fronts = load_fronts(args.folder)
    if args.write_docs:
        for path in write_docs(fronts):
            print(f"wrote {path}")
        return
    print("## What the fixtures show (README)\n\n" + readme_table(fronts) + "\n")
    print("## Fewer steps and LazyCache\n\n" + baselines_table(fronts) + "\n")
    print("## Every preset and the best stack against fewer steps and LazyCache\n\n" + margins_table(fronts) + "\n")
    found = winners(fronts)
    print(f"## SDTM settings >= {WIN_DB:g} dB ahead of fewer steps at >= {WIN_SPEED:g}x\n")
    for e in found:
        print(f"- {e['front']}: {e['name']} {e['speedup']:.2f}x {e['psnr']:.2f} dB, {cell(e['fewer'])}")
    if not found:
        print("none on any front; the closest at >= 1.3x per front:")
        for name, e in closest(fronts).items():
            print(f"- {name}: {e['name']} {e['speedup']:.2f}x {e['psnr']:.2f} dB, {cell(e['fewer'])}")


if __name__ == "__main__":
    main()
