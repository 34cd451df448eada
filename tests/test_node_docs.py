"""The node docs pages (web/js/docs, written by ``python -m commands.node_docs``) against the pack as ComfyUI
loads it: every knob, preset, input and section has its English and Chinese text, a translation is flagged
when the English it translates changes, the committed pages are exactly what the pack, the measured front and
the texts make now, every page shows every input of its node, and the docs folder holds only pages and
pictures. The pages open in the real editor in tests/test_browser.py."""
import copy
import dataclasses
import json
import types

import pytest

from benchmarks import front_margins, front_report
from commands import node_docs, node_docs_advice
from commands import node_docs_text as text


@pytest.fixture(scope="module")
def pack():
    return node_docs.Pack()


def test_every_knob_preset_input_and_section_has_its_text_in_english_and_chinese(pack):
    assert node_docs.translation_problems(pack) == []


def test_a_changed_tooltip_a_new_knob_or_preset_or_a_missing_translation_is_caught(pack, monkeypatch):
    changed = copy.copy(pack)
    changed.info = copy.deepcopy(pack.info)
    opacity = changed.info["SDTM_MergeMap"]["input"]["required"]["opacity"][1]
    opacity["tooltip"] = "How strongly merged tokens are tinted (0 = not at all)."
    problems = node_docs.translation_problems(changed)
    assert len(problems) == 1 and problems[0].startswith("SDTM_MergeMap input opacity: its English changed")
    assert node_docs.digest(opacity["tooltip"]) in problems[0]

    knobs = types.SimpleNamespace(**vars(pack.knobs))
    new_knob = dataclasses.replace(pack.knobs.KNOB_BY_INPUT["window"], input="window_height", tooltip="Window rows.")
    knobs.KNOBS = (*pack.knobs.KNOBS, new_knob)
    presets = types.SimpleNamespace(**vars(pack.presets))
    presets.PURPOSES = {**pack.presets.PURPOSES, "draft": "a quick look"}
    changed = copy.copy(pack)
    changed.knobs, changed.presets = knobs, presets
    problems = node_docs.translation_problems(changed)
    assert [p.split(":")[0] for p in problems] == ["knob window_height", "preset draft"]
    assert all("no Chinese text" in p for p in problems)

    monkeypatch.delitem(text.KNOB_ZH, "ratio")
    monkeypatch.setitem(text.SECTIONS, "map.reading", {"en": "..."})
    problems = node_docs.translation_problems(pack)
    assert [p.split(":")[0] for p in problems] == ["knob ratio", "SECTIONS['map.reading']"]


def test_the_committed_pages_are_as_written_from_the_pack_and_the_measured_front(pack):
    assert node_docs.check(pack) == []


def test_each_page_shows_every_input_of_its_node_and_the_apply_page_every_preset(pack):
    version = node_docs.pack_version()
    for node in node_docs.NODE_IDS:
        inputs = [name for name, *_ in node_docs.node_inputs(pack.info[node])]
        assert inputs
        for locale in node_docs.LOCALES:
            page = (node_docs.DOCS / node / f"{locale}.md").read_text(encoding="utf-8")
            assert page.startswith(f"# {pack.info[node]['display_name']}\n")
            assert text.SECTIONS[f"{node}.intro"][locale] in page
            assert all(f"- **`{name}`**" in page for name in inputs), (node, locale)
            assert page.rstrip().endswith(node_docs.section("footer", locale, version=version, node=node) + "</sub>")
            if node == "SDTM_Apply":
                assert all(f"### {name}" in page for name in pack.presets.PRESETS)
        fallback = (node_docs.DOCS / f"{node}.md").read_text(encoding="utf-8")
        assert fallback == (node_docs.DOCS / node / f"{node_docs.FALLBACK_LOCALE}.md").read_text(encoding="utf-8")


def test_the_lazycache_advice_is_refused_when_the_front_no_longer_supports_it():
    fronts = {d: node_docs.load_front(d) for d in node_docs.FRONTS}
    figures = node_docs.front_figures(fronts)
    assert set(figures["fields"]) >= {"lazy_lead_64", "lazy_lead_32", "best_stack_64"}
    better = json.loads(json.dumps(fronts["64"]))
    for row in better["results"]:
        if row["name"] == "preset balanced":
            row["psnr_mean"] = 60.0
    with pytest.raises(node_docs_advice.ClaimError, match="64x64 tokens a preset is not behind LazyCache"):
        node_docs.front_figures({"64": better, "32": fronts["32"]})


def test_the_docs_folder_holds_only_pages_and_pictures():
    """ComfyUI's server loads every .js file under WEB_DIRECTORY into the editor: none may lie in the docs."""
    files = [p for p in node_docs.DOCS.rglob("*") if p.is_file()]
    assert files and all(p.suffix in (".md", ".png") for p in files), files


def photo_front_with_fast_ahead(fronts: dict, margin: float) -> dict:
    """The committed photo front, its fast preset ``margin`` dB above fewer steps at its speed."""
    changed = json.loads(json.dumps(fronts["photo"]))
    fewer = front_report.baseline_points(changed["results"], front_report.FEWER)
    for row in changed["results"]:
        if row["name"] == "preset fast":
            row["psnr_mean"] = front_report.interpolate(fewer, row["speedup_sd3-medium"]) + margin
    return {**fronts, "photo": changed}


def test_the_advice_is_refused_when_a_committed_front_shows_a_preset_well_ahead_of_fewer_steps():
    """The advice section says fewer steps keeps more than every preset in each regime, naming the cases less than
    1 dB ahead: a copy of the committed photo front whose fast preset keeps 1.5 dB more than fewer steps at its
    speed must fail the check."""
    fronts = front_margins.load_fronts(node_docs.BENCH)
    fields = node_docs_advice.advice_figures(fronts)  # the committed fronts support it
    assert {"base_gap_min", "few_gap_min", "pass_gap_min", "base_lazy_ahead"} <= set(fields)
    with pytest.raises(node_docs_advice.ClaimError, match="preset fast on front_photo.json is not behind fewer steps"):
        node_docs_advice.advice_figures(photo_front_with_fast_ahead(fronts, 1.5))


def test_a_preset_slightly_ahead_of_fewer_steps_is_named_in_the_advice_in_both_locales():
    """0.5 dB ahead: the advice still says lower the step count, names the case where the two are close (front,
    preset, margin, speed) and qualifies its lead sentence; a held-out run (no stated cases) still disagrees."""
    fronts = photo_front_with_fast_ahead(front_margins.load_fronts(node_docs.BENCH), 0.5)
    fields = node_docs_advice.advice_figures(fronts)
    fast = next(r for r in fronts["photo"]["results"] if r["name"] == "preset fast")
    speed = f"{fast['speedup_sd3-medium']:.2f}x"
    assert fields["base_except_en"].startswith(", save one case: on the photo fixture at 30 steps euler/sgm_uniform")
    assert f"fast kept 0.5 dB more than fewer steps at {speed}" in fields["base_except_en"]
    assert f"fast 在 {speed} 时比减少步数多保留 0.5 dB" in fields["base_except_zh"]
    facts = front_margins.facts(fronts)
    def stated(found: dict) -> int:
        return sum(len(node_docs_advice.stated_exceptions(found[regime])) for regime in front_margins.REGIMES)
    cases = stated(facts)
    assert cases == 1 + stated(front_margins.facts(front_margins.load_fronts(node_docs.BENCH)))
    count = node_docs_advice.count_text(cases, "en")
    assert fields["lead_except_en"] == f" but for {count} where it was less than 1 dB ahead (below)"
    assert f"{cases} 处例外" in fields["lead_except_zh"]
    assert not node_docs_advice.advice_problems(facts, ["base"])
    assert "preset fast on front_photo.json" in node_docs_advice.advice_problems(facts, ["base"], exceptions=False)[0]


def test_the_advice_is_refused_when_lazycache_no_longer_trades_places_with_fewer_steps():
    fronts = front_margins.load_fronts(node_docs.BENCH)
    changed = {}
    for name, data in fronts.items():
        changed[name] = json.loads(json.dumps(data))
        if front_margins.regime(data) == "base":  # every LazyCache point 1 dB under fewer steps at its speed
            fewer = front_report.baseline_points(data["results"], front_report.FEWER)
            for row in changed[name]["results"]:
                at = front_report.interpolate(fewer, row["speedup_sd3-medium"])
                if row["family"] == "lazycache" and at is not None:
                    row["psnr_mean"] = at - 1.0
    with pytest.raises(node_docs_advice.ClaimError, match="LazyCache minus fewer steps"):
        node_docs_advice.advice_figures(changed)
