"""The SDTM nodes' pages for the ComfyUI editor's node docs panel, written from the pack itself.

The panel (select a node, then the info button of the selection toolbox) asks the server for
``/extensions/<pack folder>/docs/<node id>/<locale>.md`` and then ``.../docs/<node id>.md``; the server
maps ``/extensions/<pack folder>/`` to WEB_DIRECTORY (web/js). Relative image paths in a page resolve
against the docs folder, not the page's own folder, so pages name images as ``<node id>/<file>``.

Each page's inputs (values, defaults, what they do) come from the nodes' real definitions (ComfyUI's
/object_info, with the pack loaded), the knob tooltips from ``sdtm_ops/knobs.py``, the presets from
``nodes/presets.py``, the figures from the measured front (docs/benchmarks/front_dense*.json), the Run
Report example from the committed demo report through the node's own formatter, and the Merge Map picture
from ``commands.merge_map_picture``. The words, English and Chinese side by side, are in
``commands/node_docs_text.py``; the advice section and its check against the committed fronts in
``commands/node_docs_advice.py``.

    python -m commands.node_docs write    # (re)write web/js/docs: pages, the front chart, the merge map picture
    python -m commands.node_docs check    # every text translated and current, every page as write makes it
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import tomllib

from benchmarks import front_margins
from benchmarks.front_report import FAMILY_STYLE, FEWER, best_stack, front_verdict
from commands import node_docs_text as text
from commands.node_docs_advice import ClaimError, advice_figures
from commands.node_docs_text import LOCALES, section

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "web" / "js" / "docs"
BENCH = REPO / "docs" / "benchmarks"
NODE_IDS = ("SDTM_Apply", "SDTM_ApplyAdvanced", "SDTM_RunReport", "SDTM_MergeMap")
FALLBACK_LOCALE = "en"  # <node id>.md, for editor locales without a page of their own
# the dense fixture at its two token densities (docs/FIXTURE.md): one model, so the density effect is read alone
FRONTS = {"64": BENCH / "front_dense.json", "32": BENCH / "front_dense-32.json"}
DEMO_REPORT = BENCH / "demo_photo_report.json"
FRONT_CHART = "SDTM_Apply/front.png"
MERGE_MAP = "SDTM_MergeMap/merge_map.png"
MERGE_MAP_STEPS = 30
# small: the Registry archive carries the picture (a palette of 128 colours keeps it under 60 KB)
MERGE_MAP_ARGS = ("--steps", str(MERGE_MAP_STEPS), "--scale", "1", "--colors", "128")


def digest(english: str) -> str:
    """The short digest a translation's ``for`` records of the English it translates."""
    return hashlib.sha256(english.encode("utf-8")).hexdigest()[:8]


def pack_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


# ------------------------------------------------------------------------------------------------
# The pack, as ComfyUI loads it
# ------------------------------------------------------------------------------------------------
class Pack:
    """What the pages are written from: the nodes' definitions, the knob table, the presets and the Run
    Report's formatter, from the pack ComfyUI loaded."""

    def __init__(self) -> None:
        from commands.workflow_api import object_info_in_process
        from harness.comfy_env import load_pack
        loaded = load_pack()
        info = object_info_in_process()
        self.info = {node: info[node] for node in NODE_IDS}
        self.knobs = sys.modules[loaded.module.__name__ + ".sdtm_ops.knobs"]
        self.presets = loaded.presets
        self.readable_report = sys.modules[loaded.module.__name__ + ".nodes.sdtm_nodes"].readable_report
        self.config_type = loaded.ops.SDTMConfig


def node_inputs(definition: dict) -> list[tuple[str, str, dict, bool]]:
    """(name, type, options, optional) of a node definition's inputs, in the node's order (no hidden ones)."""
    out = []
    for group in ("required", "optional"):
        for name in definition.get("input_order", {}).get(group, []):
            spec = definition["input"][group][name]
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            options = dict(spec[1]) if len(spec) > 1 else {}
            if isinstance(spec[0], list):
                options.setdefault("options", spec[0])
            out.append((name, kind, options, group == "optional"))
    return out


def shown_english(node: str, name: str, options: dict) -> str:
    """The English a page shows for a node input that is not a knob: its tooltip, or the table's shorter text."""
    return text.INPUT_TEXT.get((node, name), {}).get("en", options.get("tooltip", ""))


def translation_problems(pack: Pack) -> list[str]:
    """Every knob, preset, input and output of the four nodes needs its text in both languages, translated
    from the English the pack has now: one line per problem, saying what to do."""
    problems = []

    def check(entry: dict | None, english: str, where: str, table: str) -> None:
        if entry is None or not entry.get("zh"):
            problems.append(f"{where}: no Chinese text; add it to {table} with 'for': '{digest(english)}'")
        elif entry.get("for") != digest(english):
            problems.append(f"{where}: its English changed since the Chinese was written ({english[:60]!r}...); "
                            f"revise {table} and set its 'for' to '{digest(english)}'")
    for knob in pack.knobs.KNOBS:
        check(text.KNOB_ZH.get(knob.input), knob.tooltip, f"knob {knob.input}", f"KNOB_ZH[{knob.input!r}]")
    check(text.PERCENT_HELP_ZH, pack.knobs.PERCENT_HELP, "PERCENT_HELP", "PERCENT_HELP_ZH")
    for name, purpose in pack.presets.PURPOSES.items():
        entry = text.PRESET_TEXT.get(name)
        check(entry, purpose, f"preset {name}", f"PRESET_TEXT[{name!r}]")
        if entry is not None and not entry.get("en"):
            problems.append(f"preset {name}: no English text in PRESET_TEXT[{name!r}]")
    for extra in sorted(set(text.PRESET_TEXT) - set(pack.presets.PURPOSES)):
        problems.append(f"PRESET_TEXT[{extra!r}]: the pack has no preset {extra!r}")
    for node, definition in pack.info.items():
        for name, _, options, _ in node_inputs(definition):
            if node in ("SDTM_Apply", "SDTM_ApplyAdvanced") and name in pack.knobs.KNOB_BY_INPUT:
                continue
            key = (node, name)
            check(text.INPUT_TEXT.get(key), options.get("tooltip", ""), f"{node} input {name}", f"INPUT_TEXT[{key}]")
        for i, tip in enumerate(definition.get("output_tooltips") or []):
            check(text.INPUT_TEXT.get((node, "output")), tip or "", f"{node} output {i}",
                  f"INPUT_TEXT[({node!r}, 'output')]")
    for key, entry in text.SECTIONS.items():
        missing = [locale for locale in LOCALES if not entry.get(locale)]
        if missing:
            problems.append(f"SECTIONS[{key!r}]: no text in {', '.join(missing)}")
    return problems


# ------------------------------------------------------------------------------------------------
# Figures from the measured front
# ------------------------------------------------------------------------------------------------
def load_front(density: str) -> dict:
    path = FRONTS[density]
    if not path.is_file():
        raise SystemExit(f"node_docs: {path.relative_to(REPO)} is missing: run python -m benchmarks.bench_front "
                         f"--fixtures {'dense' if density == '64' else 'dense-32'} (docs/BENCHMARKS.md)")
    return json.loads(path.read_text(encoding="utf-8"))


def front_figures(fronts: dict[str, dict]) -> dict:
    """Per density: each measured setting's speed, PSNR and margin against LazyCache at its speed (or the
    bound below LazyCache's slowest skipping point), and the fields the LazyCache section's text uses;
    raises ClaimError when that text would no longer be true."""
    figures = {"setup": fronts["64"]["setup"]}
    fields = {}
    for density, data in fronts.items():
        verdict = {v["name"]: v for v in front_verdict(data["results"], at_least=1.0)}
        figures[density] = verdict
        presets = [v for name, v in verdict.items() if v["family"] == "sdtm-preset" and name != "preset turbo"]
        leads = [-(v["margin_db"] if v["margin_db"] is not None else v["margin_at_most_db"]) for v in presets]
        if not presets or None in leads or min(leads) <= 0:
            raise ClaimError(f"at {density}x{density} tokens a preset is not behind LazyCache at its speed "
                             f"({leads}): the LazyCache section's text says it is; revise it")
        fields[f"lazy_lead_{density}"] = f"{min(leads):.1f}-{max(leads):.1f}"
        best = best_stack(verdict)
        if best is not None:
            if best["margin_db"] >= 0:
                raise ClaimError(f"at {density}x{density} tokens the stack {best['name']} beats LazyCache alone: "
                                 "the LazyCache section's text says no stack does; revise it")
            fields.update({f"best_stack_{density}": best["name"].replace("->", "→"),
                           f"best_stack_speed_{density}": f"{best['speedup']:.2f}",
                           f"best_stack_psnr_{density}": f"{best['psnr']:.1f}",
                           f"best_stack_margin_{density}": f"{best['margin_db']:+.1f}",
                           f"best_stack_gap_{density}": f"{-best['margin_db']:.1f}"})
    figures["fields"] = fields
    return figures


def margin_text(v: dict, baseline: str, locale: str) -> str:
    """How far a verdict entry is behind or ahead of a baseline ("lazy": LazyCache, "fewer": fewer steps) at its
    speed: the margin, or the bound below the baseline's slowest point; empty where neither was measured."""
    keys = ("margin_db", "margin_at_most_db") if baseline == "lazy" else ("margin_fewer_db", "margin_fewer_at_most_db")
    margin, bound = v.get(keys[0]), v.get(keys[1])
    if margin is None and bound is None:
        return ""
    side = "ahead" if (margin if margin is not None else bound) > 0 else "behind"
    name = section(f"preset.{baseline}", locale)
    if margin is not None:
        return section("preset.margin", locale, margin=f"{abs(margin):.1f}", word=section(f"preset.{side}", locale),
                       baseline=name)
    return section(f"preset.bound_{side}", locale, margin=f"{abs(bound):.1f}", baseline=name)


def measured_text(verdict: dict, name: str, locale: str) -> str:
    """A preset's PSNR and speed on the front, and how far it is behind or ahead of fewer steps and of LazyCache
    at that speed."""
    v = verdict.get(name)
    if v is None:
        return "-"
    margins = [m for m in (margin_text(v, "fewer", locale), margin_text(v, "lazy", locale)) if m]
    return section("preset.measured_value", locale, psnr=f"{v['psnr']:.1f}", speed=f"{v['speedup']:.2f}",
                   margin=section("preset.and", locale).join(margins))


FEW_STEP_FRONTS = {"4": BENCH / "front_photo-4steps.json", "8": BENCH / "front_photo-8steps.json"}


def turbo_text(locale: str) -> str:
    """The turbo preset on the few-step fronts (photo fixture, 4 and 8 steps)."""
    parts = []
    for steps, path in FEW_STEP_FRONTS.items():
        if not path.is_file():
            raise ClaimError(f"{path.relative_to(REPO)} is missing: the turbo preset's line cites it")
        data = json.loads(path.read_text(encoding="utf-8"))
        verdict = {v["name"]: v for v in front_verdict(data["results"], at_least=1.0)}
        parts.append(section("preset.turbo_at", locale, steps=steps, sampler=data["setup"]["sampler"],
                             scheduler=data["setup"]["scheduler"],
                             measured=measured_text(verdict, "preset turbo", locale)))
    return section("preset.turbo", locale, runs=section("preset.runs_sep", locale).join(parts))


def draw_front_chart(fronts: dict[str, dict], png: Path) -> None:
    """The docs panel shows pictures about 284 px wide: one narrow column, a panel per density (64x64 and 32x32
    tokens) with large type and four series: fewer steps, LazyCache's sweep, the presets and the best stack."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(fronts), 1, figsize=(3.2, 2.7 * len(fronts)), dpi=100, sharex=True)
    for ax, (density, data) in zip(axes, fronts.items()):
        rows = [r for r in data["results"] if math.isfinite(r["psnr_mean"]) and r["speedup_sd3-medium"] <= 3.2]
        for family, style, name in ((FEWER, "P-", "fewer steps"), ("lazycache", "o-", "LazyCache")):
            points = sorted((r["speedup_sd3-medium"], r["psnr_mean"]) for r in rows if r["family"] == family)
            if points:
                ax.plot(*zip(*points), style, color=FAMILY_STYLE[family][0], ms=4, lw=1.4, label=name)
        presets = [r for r in rows if r["family"] == "sdtm-preset" and r["name"] != "preset turbo"]
        ax.plot([r["speedup_sd3-medium"] for r in presets], [r["psnr_mean"] for r in presets], "s", color="#d62728",
                ms=6, ls="none", label="SDTM presets")
        for r in presets:
            ax.annotate(r["name"].replace("preset ", ""), (r["speedup_sd3-medium"], r["psnr_mean"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=8, color="#d62728")
        best = best_stack({v["name"]: v for v in front_verdict(data["results"], at_least=1.0)})
        if best is not None:
            ax.plot(best["speedup"], best["psnr"], "v", color="#8c564b", ms=7, ls="none", label="best stack")
        ax.set_title(f"dense fixture, {density}x{density} tokens", fontsize=10)
        ax.set_ylabel("PSNR (dB)", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("estimated speedup", fontsize=10)
    legend = {}
    for ax in axes:  # a panel without a series (no fewer steps measured) still names it
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    axes[0].legend(legend.values(), legend.keys(), fontsize=8, loc="upper right", handletextpad=0.3, borderpad=0.3)
    fig.tight_layout(pad=0.4)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, metadata={"Software": None})
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# The pages
# ------------------------------------------------------------------------------------------------
def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def input_line(pack: Pack, node: str, name: str, kind: str, options: dict, optional: bool, locale: str) -> str:
    """One input as a list item: its values, its default and what it does (the docs panel is narrow: no tables)."""
    knob = pack.knobs.KNOB_BY_INPUT.get(name) if node in ("SDTM_Apply", "SDTM_ApplyAdvanced") else None
    override = knob is not None and node == "SDTM_Apply" and knob.preset_override
    if kind in ("INT", "FLOAT"):
        values = section("range", locale, low=_number(options.get("min")), high=_number(options.get("max")))
        if override:
            values = f"{pack.knobs.PRESET_VALUE}, " + section("range", locale, low=_number(knob.low),
                                                              high=_number(options.get("max")))
    elif kind == "BOOLEAN":
        values = section("on_off", locale)
    elif kind == "COMBO":
        values = ", ".join(options["options"])
    elif kind == "STRING":
        values = section("any_text", locale)
    else:
        values = kind + (section("optional", locale) if optional else "")
    if knob is not None:  # the progress knobs' shared help is said once, below the list
        effect = knob.tooltip.replace(pack.knobs.PERCENT_HELP, "").rstrip() if locale == "en" else \
            text.KNOB_ZH[name]["zh"].format(percent_help="").rstrip()
        if override:
            effect = text.PRESET_VALUE_NOTE[locale].format(value=pack.knobs.PRESET_VALUE) + effect
    else:
        effect = shown_english(node, name, options) if locale == "en" else text.INPUT_TEXT[(node, name)]["zh"]
    if "default" not in options:
        return section("input_link", locale, name=name, values=values, effect=effect)
    default = options["default"]
    if kind == "BOOLEAN":
        default = section("on_off", locale).split(" / ")[0 if default else 1]
    return section("input", locale, name=name, values=values, default=_number(default), effect=effect)


def inputs_section(pack: Pack, node: str, locale: str) -> list[str]:
    definition = pack.info[node]
    lines = [f"## {section('inputs', locale)}", ""]
    lines += [input_line(pack, node, *item, locale) for item in node_inputs(definition)]
    knobs = pack.knobs.KNOB_BY_INPUT
    progress = [name for name, *_ in node_inputs(definition)
                if name in knobs and pack.knobs.PERCENT_HELP in knobs[name].tooltip]
    if progress and node in ("SDTM_Apply", "SDTM_ApplyAdvanced"):
        help_text = pack.knobs.PERCENT_HELP if locale == "en" else text.PERCENT_HELP_ZH["zh"]
        names = ", ".join(f"`{name}`" for name in progress)
        lines += ["", section("progress", locale, names=names, help=help_text)]
    lines += ["", f"## {section('output', locale)}", ""]
    for name, tip in zip(definition["output_name"], definition.get("output_tooltips") or []):
        shown = tip if locale == "en" else text.INPUT_TEXT[(node, "output")]["zh"]
        lines.append(section("output_line", locale, name=name, effect=shown))
    return lines


def settings_text_zh(config) -> str:
    """nodes.presets.settings_text, in Chinese."""
    full = f"每 {config.protect_every} 步有 1 步完整运行" if config.protect_every else "没有完整步"
    parts = [f"比例 {config.ratio:g} ± {config.deviation:g}", f"结构阶段到进度 {config.switch:g}", full,
             "带缓存混合" if config.caches else "不用缓存"]
    if config.structure_attention == "full":
        parts.append("完整长度注意力")
    if config.proportional_attention:
        parts.append("比例注意力")
    return "，".join(parts)


def presets_section(pack: Pack, figures: dict, locale: str) -> list[str]:
    setup = figures["setup"]
    lines = [f"## {section('presets.title', locale)}", ""]
    for name, (config, _) in pack.presets.PRESETS.items():
        steps = pack.presets.PRESET_STEPS[name]
        flops = " / ".join(f"{s:.2f}x" for s in pack.presets.flop_speedups(config, steps))
        settings = pack.presets.settings_text(config) if locale == "en" else settings_text_zh(config)
        default = section("default_mark", locale) if name == pack.presets.DEFAULT_PRESET else ""
        lines += [f"### {name}{default}", "",
                  section("preset.use", locale, use=text.PRESET_TEXT[name][locale]),
                  section("preset.settings", locale, settings=settings),
                  section("preset.flops", locale, steps=steps, flops=flops)]
        if name == "turbo":
            lines.append(turbo_text(locale))
        else:
            lines.append(section("preset.measured", locale, at64=measured_text(figures["64"], f"preset {name}", locale),
                                 at32=measured_text(figures["32"], f"preset {name}", locale)))
        lines.append("")
    lines += [section("presets.note", locale, steps=setup["steps"], sampler=setup["sampler"],
                      scheduler=setup["scheduler"], seeds=setup["seeds"]), "",
              f"![{section('presets.chart', locale)}]({FRONT_CHART})"]
    return lines


def footer(node: str, locale: str, version: str) -> list[str]:
    return ["", "---", "", f"<sub>{section('footer', locale, version=version, node=node)}</sub>", ""]


def page(pack: Pack, node: str, locale: str, figures: dict, example: dict, version: str) -> str:
    title = pack.info[node]["display_name"]
    lines = [f"# {title}", "", section(f"{node}.intro", locale), ""]
    lines += inputs_section(pack, node, locale)
    if node == "SDTM_Apply":
        lines += [""] + presets_section(pack, figures, locale)
        lines += ["", f"## {section('advice.title', locale)}", "",
                  section("advice.body", locale, **figures["fields"], **figures["advice"])]
        lines += ["", f"## {section('after.title', locale)}", "", section("after.body", locale)]
    elif node == "SDTM_ApplyAdvanced":
        defaults = pack.config_type()
        lines += ["", f"## {section('advanced.presets_title', locale)}", "", section("advanced.presets_intro", locale),
                  ""]
        for name, (config, _) in pack.presets.PRESETS.items():
            changed = []
            for knob in pack.knobs.KNOBS:
                value = getattr(config, knob.field)
                if value != getattr(defaults, knob.field):
                    shown = section("on_off", locale).split(" / ")[0 if value else 1] if isinstance(value, bool) \
                        else _number(value)
                    changed.append(f"`{knob.input}` {shown}")
            lines.append(section("output_line", locale, name=name,
                                 effect=", ".join(changed) or section("advanced.defaults", locale)))
        lines += ["", f"## {section('advanced.notes_title', locale)}", "", section("advanced.notes", locale)]
    elif node == "SDTM_RunReport":
        lines += ["", f"## {section('report.reading_title', locale)}", "", section("report.reading", locale), "",
                  f"## {section('report.example_title', locale)}", "",
                  section("report.example_intro", locale, steps=example["steps"]), "", "```",
                  example["summary"], "```", "", section("report.json", locale)]
    elif node == "SDTM_MergeMap":
        lines += ["", f"## {section('map.reading_title', locale)}", "", section("map.reading", locale), "",
                  f"## {section('map.example_title', locale)}", "",
                  section("map.example", locale, steps=MERGE_MAP_STEPS,
                          command="python -m commands.merge_map_picture " + " ".join(MERGE_MAP_ARGS)), "",
                  f"![SDTM Merge Map]({MERGE_MAP})"]
    return "\n".join(lines + footer(node, locale, version))


def demo_example(pack: Pack) -> dict:
    report = json.loads(DEMO_REPORT.read_text(encoding="utf-8"))
    return {"steps": report["steps"], "summary": pack.readable_report(report["sdtm_report"])}


def pages(pack: Pack) -> dict[Path, str]:
    """Every page: web/js/docs/<node id>/<locale>.md and the fallback <node id>.md."""
    figures = front_figures({d: load_front(d) for d in FRONTS})
    figures["advice"] = advice_figures(front_margins.load_fronts(BENCH))
    example, version = demo_example(pack), pack_version()
    out = {}
    for node in NODE_IDS:
        for locale in LOCALES:
            out[DOCS / node / f"{locale}.md"] = page(pack, node, locale, figures, example, version)
        out[DOCS / f"{node}.md"] = out[DOCS / node / f"{FALLBACK_LOCALE}.md"]
    return out


IMAGE_LINK = "]("


def linked_images(markdown: str) -> list[str]:
    """The image paths a page links (``![alt](path)``)."""
    found, start = [], 0
    while (i := markdown.find("![", start)) != -1:
        j = markdown.find(IMAGE_LINK, i)
        k = markdown.find(")", j)
        found.append(markdown[j + len(IMAGE_LINK):k])
        start = k
    return found


def check(pack: Pack) -> list[str]:
    """Problems: translations missing or stale, pages not as ``write`` makes them, images missing."""
    problems = translation_problems(pack)
    if problems:
        return problems
    try:
        expected = pages(pack)
    except ClaimError as e:
        return [f"{e} (commands/node_docs_text.py SECTIONS['advice.body'])"]
    for path, content in expected.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            problems.append(f"{path.relative_to(REPO)} is not as written from the pack now: "
                            "run python -m commands.node_docs write")
        for image in linked_images(content):
            if not (DOCS / image).is_file():
                problems.append(f"{path.relative_to(REPO)} shows {image}, missing under web/js/docs")
    stray = sorted(p for p in DOCS.rglob("*") if p.is_file() and p not in expected
                   and p.relative_to(DOCS).as_posix() not in (FRONT_CHART, MERGE_MAP))
    problems += [f"{p.relative_to(REPO)}: not a page or picture node_docs writes" for p in stray]
    return problems


def write(pack: Pack, pictures: bool = True) -> list[Path]:
    problems = translation_problems(pack)
    if problems:
        raise SystemExit("node_docs: fix the texts first (commands/node_docs_text.py):\n  " + "\n  ".join(problems))
    written = []
    for path, content in pages(pack).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    if pictures:
        draw_front_chart({d: load_front(d) for d in FRONTS}, DOCS / FRONT_CHART)
        from commands import merge_map_picture
        merge_map_picture.main([*MERGE_MAP_ARGS, "--out", str(DOCS / MERGE_MAP)])
        written += [DOCS / FRONT_CHART, DOCS / MERGE_MAP]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commands.node_docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("write", "check"))
    parser.add_argument("--no-pictures", action="store_true", help="write: leave the two pictures as they are")
    args = parser.parse_args(argv)
    pack = Pack()
    if args.action == "write":
        for path in write(pack, pictures=not args.no_pictures):
            print(f"wrote {path.relative_to(REPO)}")
        return 0
    problems = check(pack)
    for line in problems:
        print(line)
    if not problems:
        print(f"{len(NODE_IDS)} nodes x {len(LOCALES)} locales: pages current, every text translated")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
