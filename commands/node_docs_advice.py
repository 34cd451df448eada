"""The advice section of the SDTM Apply docs page ("Which to use when"), held to the committed fronts: the figures
it quotes per regime (base pass at 20-50 steps, 4-8 steps, a hires / img2img pass), the cases it names where a
preset was slightly ahead of fewer steps, the held-out check's verdicts, and the problems that fail
``python -m commands.node_docs check`` when a front contradicts a sentence (``benchmarks.front_margins.facts``)."""
from __future__ import annotations

import json
import math

from benchmarks import front_margins
from commands.node_docs_text import LOCALES, section

BENCH = front_margins.JSON_DIR
REPO = BENCH.parents[1]


class ClaimError(ValueError):
    """A sentence of the pages no longer says what the measured front shows."""


def advice_problems(facts: dict, regimes=None, exceptions: bool = True) -> list[str]:
    """Each sentence of the advice section ("Which to use when") that ``facts`` (``front_margins.facts``)
    contradict, one line each: a regime it speaks of has no front, the best stack is not behind fewer steps at its
    speed, an SDTM preset is not behind it either (other than the cases under EXCEPTION_DB the section states,
    where ``exceptions``: the committed fronts; a held-out run states none), or LazyCache is not where the section
    puts it against fewer steps."""
    problems = []
    for regime in regimes or front_margins.REGIMES:
        where = front_margins.REGIME_TEXT[regime]
        if regime not in facts:
            problems.append(f"no committed front measures fewer steps in the {where} regime: the advice speaks of it")
            continue
        f = facts[regime]
        stated = {(e["name"], e["front"]) for e in stated_exceptions(f)} if exceptions else set()
        for kind in ("presets", "stacks"):
            if not f[kind] and (kind == "presets" or regime == "base"):  # the stacks' sentence is on 20-50 steps
                problems.append(f"{where}: no front sets {kind} against fewer steps: the advice speaks of them")
            for m, name, front in f[kind]:
                if m >= 0 and (kind == "stacks" or (name, front) not in stated):
                    figure = "at most " if (name, front) in f["bounds"] else ""
                    problems.append(f"{where}: {name} on front_{front}.json is not behind fewer steps at its speed "
                                    f"(margin {figure}{m:+.1f} dB): the advice says fewer steps keeps more; revise it")
    return problems + lazy_problems(facts, regimes)


EXCEPTION_DB = front_margins.WIN_DB  # a preset ahead of fewer steps by less is stated; by more, a problem


def stated_exceptions(f: dict) -> list[dict]:
    """The presets of one regime's facts measured ahead of fewer steps at their speed by less than EXCEPTION_DB:
    the advice names each (fewer steps is still what it recommends there, "the two are close"); a preset further
    ahead, or a bound at or above 0, is one of :func:`advice_problems` instead."""
    return [e for e in f["exceptions"] if e["margin"] < EXCEPTION_DB]


def where_text(setup: dict, locale: str) -> str:
    """A front in words: the pass, its denoise and steps; or the fixture, steps and sampler."""
    if "pass" in setup:
        return section("advice.where_pass", locale, kind=section(f"advice.kind_{setup['pass']}", locale),
                       denoise=f"{setup['denoise']:g}", steps=setup["steps"], seeds=setup["seeds"])
    return section("advice.where_run", locale, fixture=setup["fixture"], steps=setup["steps"],
                   sampler=setup["sampler"], scheduler=setup["scheduler"], seeds=setup["seeds"])


def count_text(n: int, locale: str) -> str:
    return section("advice.count_one", locale) if n == 1 else section("advice.count_many", locale, n=n)


def exception_fields(facts: dict) -> dict:
    """Per regime and locale, the end of the regime's sentence on the presets (its exceptions, or a full stop),
    and the lead sentence's qualifier."""
    fields, every = {}, []
    for regime in front_margins.REGIMES:
        cases = stated_exceptions(facts[regime])
        every += cases
        for locale in LOCALES:
            listed = section("advice.list_sep", locale).join(
                section("advice.except_case", locale, where=where_text(e["setup"], locale),
                        preset=e["name"].removeprefix("preset "), margin=f"{e['margin']:.1f}",
                        speed=f"{e['speedup']:.2f}") for e in cases)
            fields[f"{regime}_except_{locale}"] = (section("advice.except", locale, count=count_text(
                len(cases), locale), cases=listed) if cases else section("advice.end", locale))
    for locale in LOCALES:
        fields[f"lead_except_{locale}"] = section("advice.lead_except", locale, count=count_text(
            len(every), locale), limit=f"{EXCEPTION_DB:g}") if every else ""
    return fields


def advice_figures(fronts: dict[str, dict]) -> dict:
    """The fields of the advice section from every committed front that measured fewer steps
    (``benchmarks.front_margins``: name -> its JSON), per regime (base pass at 20-50 steps, 4-8 steps, a hires /
    img2img pass); raises ClaimError on the first of :func:`advice_problems`."""
    facts = front_margins.facts(fronts)
    problems = advice_problems(facts)
    if problems:
        raise ClaimError(problems[0])
    fields = {}
    for regime in front_margins.REGIMES:
        f = facts[regime]
        gaps = [-m for m, _, _ in f["presets"] if m < 0]
        fields[f"{regime}_gap_min"], fields[f"{regime}_gap_max"] = f"{min(gaps):.1f}", f"{max(gaps):.1f}"
        fields[f"{regime}_stack_gap"] = f"{min(-m for m, _, _ in f['stacks']):.1f}"
        fields[f"{regime}_fronts"] = str(len(f["fronts"]))
    fields.update(lazy_fields(facts))
    fields.update(exception_fields(facts))
    fields.update(heldout_fields())
    return fields


ADVICE_CHECK = BENCH / "advice_check.json"


def heldout_fields() -> dict:
    """The regimes where the held-out run (``benchmarks.advice_check``, its committed JSON) contradicts the advice,
    in each locale."""
    if not ADVICE_CHECK.is_file():
        raise ClaimError(f"{ADVICE_CHECK.relative_to(REPO)} is missing: the advice cites the held-out check; run "
                         "python -m benchmarks.advice_check")
    check = json.loads(ADVICE_CHECK.read_text(encoding="utf-8"))
    found = front_margins.facts(check["fronts"])
    against = [regime for regime in front_margins.REGIMES
               if regime in found and advice_problems(found, [regime], exceptions=False)]
    return {f"heldout_{locale}": section("advice.list_sep", locale).join(
        section(f"advice.regime_{regime}", locale) for regime in against) or section("advice.none", locale)
        for locale in LOCALES}


def lazy_problems(facts: dict, regimes=None) -> list[str]:
    """The advice's sentences on LazyCache against fewer steps: at 20-50 steps each is ahead at some speed on some
    front (they trade places); at 4-8 steps and in a pass LazyCache is nowhere ahead of fewer steps."""
    problems = []
    for regime in regimes or front_margins.REGIMES:
        if regime not in facts:
            continue
        where, lazy = front_margins.REGIME_TEXT[regime], [m for m, _, _ in facts[regime]["lazy"]]
        if regime == "base" and (not lazy or min(lazy) >= 0 or max(lazy) <= 0):
            problems.append(f"{where}: LazyCache minus fewer steps at LazyCache's speeds is "
                            f"{min(lazy, default=math.nan):+.1f} to {max(lazy, default=math.nan):+.1f} dB: the advice "
                            "says each is ahead somewhere; revise it")
        elif regime != "base" and lazy and max(lazy) > 0:
            problems.append(f"{where}: LazyCache is {max(lazy):.1f} dB ahead of fewer steps at one of its speeds: "
                            "the advice says it is nowhere ahead; revise it")
    return problems


def lazy_fields(facts: dict) -> dict:
    base = [m for m, _, _ in facts["base"]["lazy"]]
    fields = {"base_lazy_behind": f"{-min(base):.1f}", "base_lazy_ahead": f"{max(base):.1f}"}
    for regime in ("few", "pass"):
        fields[f"{regime}_lazy_speed"] = f"{facts[regime]['lazy_speed']:.2f}"
    return fields
