"""The front benchmark's compute counting (benchmarks/bench_front.py) on the photo fixture through ComfyUI's
real KSampler: the hooks count what the unpatched model does (blocks x tokens x calls), agree with SDTM's
own per-block accounting, and count the model calls a step cache skipped as LazyCache itself logs them."""
import logging
import re

import pytest

from benchmarks import bench_front as front
from benchmarks import front_report, front_settings
from benchmarks.front_fewer import fewer_settings, merged_rows

STEPS = 6
LATENT_HW = (32, 32)  # 16 x 16 = 256 image tokens
TOKENS = 256


@pytest.fixture(scope="module")
def run(photo_fixture_setup):
    pack, model, clip = photo_fixture_setup
    prepared = front.prepare_run(pack, model, clip, 1, STEPS, LATENT_HW, "euler", "sgm_uniform")
    yield prepared
    prepared.counter.close()


def test_unpatched_counts_are_blocks_times_tokens_times_calls(run):
    counts = run.reference_counts[0]
    depth = run.counter.depth
    assert counts["calls"] == STEPS  # cfg 4.5: cond and uncond in one call per step
    assert sorted(counts["records"]) == [(c, b) for c in range(STEPS) for b in range(depth)]
    assert set(map(tuple, counts["records"].values())) == {(2, TOKENS, TOKENS)}
    totals = front.token_totals(counts, TOKENS)
    assert totals["attn_tokens"] == totals["mlp_tokens"] == totals["full_tokens"] == STEPS * depth * 2 * TOKENS
    # The SD3-medium estimate of an unmerged run is the FLOP model's unmerged step cost for every call.
    ops = run.pack.ops
    shape, grid = ops.MODEL_SHAPES["sd3-medium"], ops.token_grid(1024, 1024)
    step_full = ops.schedule_cost(shape, grid, ops.SDTMConfig(ratio=0.0, deviation=0.0), 1).steps[0].flops_full
    estimate = front.estimated_flops(ops, counts, TOKENS, depth, shape, grid)
    assert estimate == pytest.approx(STEPS * 2 * step_full, rel=1e-12)


def test_sdtm_counts_agree_with_sdtm_own_accounting(run):
    pack = run.pack
    setting = front_settings.Setting("preset fast", "sdtm-preset", {}, front_settings.sdtm_preset(pack, "fast"))
    row = front.summary(front.measure_setting(run, setting), run)
    report = setting.model.model_options["transformer_options"][pack.hook.KEY].latest().report
    assert row["model_calls"] == report["model_calls"] == STEPS
    merged = [s for s in report["steps"] if s["mlp_tokens"] < s["tokens"]]
    assert merged, "the fast preset merged nothing at this size: the test checks nothing"
    assert row["mlp_tokens_vs_unpatched"] == pytest.approx(sum(s["mlp_tokens"] for s in report["steps"])
                                                           / sum(s["tokens"] for s in report["steps"]))
    assert row["attn_tokens_vs_unpatched"] == pytest.approx(sum(s["attn_tokens"] for s in report["steps"])
                                                            / sum(s["tokens"] for s in report["steps"]))
    # Counted by hooks, priced with the fixture's own shape: the speedup SDTM's report computed.
    assert row["speedup_fixture"] == pytest.approx(report["flop_speedup"], rel=1e-9)


def test_lazycache_skips_are_counted_as_lazycache_logs_them(run, caplog):
    caplog.set_level(logging.INFO)
    setting = front_settings.Setting("LazyCache 1.0", "lazycache", {}, front_settings.lazycache(1.0))
    row = front.summary(front.measure_setting(run, setting), run)
    logged = [re.search(r"LazyCache - skipped (\d+)/(\d+) steps", r.getMessage()) for r in caplog.records]
    skipped = [(int(m.group(1)), int(m.group(2))) for m in logged if m]
    assert skipped == [(row["skipped_calls"], STEPS)]
    assert row["skipped_calls"] > 0
    assert row["model_calls"] + row["skipped_calls"] == STEPS
    calls = STEPS - row["skipped_calls"]
    assert row["speedup_sd3-medium"] == pytest.approx(STEPS / calls)
    assert row["mlp_tokens_vs_unpatched"] == pytest.approx(calls / STEPS)


def test_easycache_skips_nothing_on_sd3(run):
    """ComfyUI 0.3.75's EasyCache hooks the DIFFUSION_MODEL wrapper, which MMDiT never calls."""
    setting = front_settings.Setting("EasyCache 0.2", "easycache", {}, front_settings.easycache(0.2))
    row = front.summary(front.measure_setting(run, setting), run)
    assert row["model_calls"] == STEPS and row["skipped_calls"] == 0
    assert row["psnr_min"] == float("inf")


def test_front_verdict_interpolates_along_lazycache():
    rows = [{"name": "unpatched", "family": "unpatched", "speedup_sd3-medium": 1.0, "psnr_mean": float("inf")},
            {"name": "L1", "family": "lazycache", "speedup_sd3-medium": 1.2, "psnr_mean": 40.0},
            {"name": "L2", "family": "lazycache", "speedup_sd3-medium": 2.2, "psnr_mean": 30.0},
            {"name": "A", "family": "sdtm-tuned", "speedup_sd3-medium": 1.7, "psnr_mean": 36.0},
            {"name": "B", "family": "sdtm-preset", "speedup_sd3-medium": 1.6, "psnr_mean": 20.0},
            {"name": "slow", "family": "sdtm-preset", "speedup_sd3-medium": 1.3, "psnr_mean": 50.0}]
    verdict = {v["name"]: v for v in front_report.front_verdict(rows)}
    assert set(verdict) == {"A", "B"}
    assert verdict["A"]["lazycache_psnr_at_speedup"] == pytest.approx(35.0)
    assert verdict["A"]["margin_db"] == pytest.approx(1.0) and not verdict["A"]["dominated"]
    assert verdict["A"]["lazycache_speedup_at_psnr"] == pytest.approx(1.6)
    assert verdict["B"]["margin_db"] == pytest.approx(-16.0) and verdict["B"]["dominated"]


def test_below_lazycaches_slowest_finite_point_the_margin_is_an_upper_bound():
    """LazyCache at its lowest thresholds skips nothing (infinite PSNR): a setting slower than the sweep's slowest
    skipping point gets no interpolated margin, only the bound that point gives (LazyCache keeps at least it)."""
    rows = [{"name": "L0", "family": "lazycache", "speedup_sd3-medium": 1.0, "psnr_mean": float("inf")},
            {"name": "L1", "family": "lazycache", "speedup_sd3-medium": 1.4, "psnr_mean": 34.0},
            {"name": "L2", "family": "lazycache", "speedup_sd3-medium": 2.0, "psnr_mean": 28.0},
            {"name": "slow", "family": "sdtm-preset", "speedup_sd3-medium": 1.25, "psnr_mean": 29.0},
            {"name": "mid", "family": "sdtm-preset", "speedup_sd3-medium": 1.7, "psnr_mean": 25.0}]
    verdict = {v["name"]: v for v in front_report.front_verdict(rows, at_least=1.0)}
    assert verdict["slow"]["margin_db"] is None and verdict["slow"]["margin_at_most_db"] == pytest.approx(-5.0)
    assert verdict["mid"]["margin_db"] == pytest.approx(-6.0) and verdict["mid"]["margin_at_most_db"] is None
    assert "at most -5.00 dB" in front_report.front_lines([verdict["slow"]])[0]


def test_the_density_table_sets_each_preset_and_the_best_stack_against_lazycache_on_each_front():
    lazy = [{"name": "L1", "family": "lazycache", "speedup_sd3-medium": 1.2, "psnr_mean": 40.0},
            {"name": "L2", "family": "lazycache", "speedup_sd3-medium": 2.2, "psnr_mean": 30.0}]
    dense = lazy + [{"name": "preset fast", "family": "sdtm-preset", "speedup_sd3-medium": 1.7, "psnr_mean": 33.0},
                    {"name": "s1", "family": "stack sdtm->lazy", "speedup_sd3-medium": 2.0, "psnr_mean": 31.0},
                    {"name": "s2", "family": "stack lazy->sdtm", "speedup_sd3-medium": 2.0, "psnr_mean": 29.0}]
    sparse = lazy + [{"name": "preset fast", "family": "sdtm-preset", "speedup_sd3-medium": 1.1, "psnr_mean": 30.0}]
    lines = front_report.density_table({"64x64": dense, "32x32": sparse}).splitlines()
    assert lines[0].startswith("| setting | 64x64: ") and len(lines) == 2 + 5
    rows = {line.split(" | ")[0][2:]: line for line in lines[2:]}
    assert rows["preset fast"].endswith("| 1.70x, 33.00, -2.0 dB | 1.10x, 30.00, <= -10.0 dB |")
    assert rows["s1"].endswith("| 2.00x, 31.00, -1.0 dB | - |") and "s2" not in rows
    assert rows["preset quality"].endswith("| - | - |")


def test_the_front_benchmark_modules_keep_to_the_line_limit():
    """No Python file over 600 lines: the front benchmark runs (bench_front), builds its settings (front_settings)
    and reports (front_report) in modules of its own."""
    for module in (front, front_settings, front_report):
        lines = len(open(module.__file__, encoding="utf-8").read().splitlines())
        assert lines <= 600, (module.__name__, lines)
    assert front.Setting is front_settings.Setting and front.build_settings is front_settings.build_settings


def test_fewer_steps_make_k_model_calls_and_are_priced_at_s_over_k(run):
    """The unpatched model at k of S steps: the hooks count k calls of every block, so the FLOP-model speedup is
    S / k for any target model, and the image differs from the S-step reference."""
    for setting in fewer_settings(STEPS, (4, 3)):
        row = front.summary(front.measure_setting(run, setting), run)
        k = setting.steps
        assert row["model_calls"] == k and row["skipped_calls"] == STEPS - k
        for name in run.shapes:
            assert row[f"speedup_{name}"] == pytest.approx(STEPS / k, rel=1e-12)
        assert row["mlp_tokens_vs_unpatched"] == pytest.approx(k / STEPS)
        assert 0 < row["psnr_min"] < float("inf")


def test_front_verdict_sets_each_setting_against_fewer_steps():
    rows = [{"name": "F1", "family": "fewer-steps", "speedup_sd3-medium": 1.25, "psnr_mean": 35.0},
            {"name": "F2", "family": "fewer-steps", "speedup_sd3-medium": 2.0, "psnr_mean": 26.0},
            {"name": "L1", "family": "lazycache", "speedup_sd3-medium": 1.2, "psnr_mean": 40.0},
            {"name": "L2", "family": "lazycache", "speedup_sd3-medium": 2.2, "psnr_mean": 30.0},
            {"name": "A", "family": "sdtm-preset", "speedup_sd3-medium": 1.5, "psnr_mean": 30.0},
            {"name": "slow", "family": "sdtm-preset", "speedup_sd3-medium": 1.1, "psnr_mean": 31.0}]
    verdict = {v["name"]: v for v in front_report.front_verdict(rows, at_least=1.0)}
    assert set(verdict) == {"A", "slow"}  # the baselines are not verdicts
    assert verdict["A"]["fewer_psnr_at_speedup"] == pytest.approx(32.0)
    assert verdict["A"]["margin_fewer_db"] == pytest.approx(-2.0)
    assert verdict["slow"]["margin_fewer_db"] is None
    assert verdict["slow"]["margin_fewer_at_most_db"] == pytest.approx(-4.0)
    assert "fewer steps 32.00 dB there, margin -2.00 dB" in front_report.front_lines([verdict["A"]])[0]


def test_a_resumed_run_keeps_the_rows_it_did_not_measure_in_their_order():
    previous = [{"name": "a", "v": 1}, {"name": "b", "v": 1}, {"name": "c", "v": 1}]
    current = [{"name": "b", "v": 2}, {"name": "d", "v": 2}]
    assert merged_rows(previous, current) == [{"name": "a", "v": 1}, {"name": "b", "v": 2}, {"name": "c", "v": 1},
                                              {"name": "d", "v": 2}]


def test_a_sampler_variant_gains_fewer_steps_and_keeps_the_rows_it_already_measured(photo_fixture_setup, tmp_path):
    """``bench_front --variants ... --groups fewer --resume``: the variant's committed rows stay as they were (not
    measured again), the unpatched model at fewer steps joins them with k calls of S, each row is saved as it
    lands, and the variant counts as a front of its own in the margins (front_margins.load_fronts)."""
    import json

    from benchmarks import front_margins
    from benchmarks.front_fewer import variant_fronts, variant_seeds
    pack, model, clip = photo_fixture_setup
    variant = "euler/sgm_uniform/4"
    first = front.run_variants(pack, model, clip, {}, [variant], 1, LATENT_HW, lambda row: None, thresholds=(0.4,))
    assert [r["name"] for r in first[variant]["rows"]] == ["LazyCache 0.4"] and first[variant]["seeds"] == 1
    first[variant]["rows"][0]["measured_before"] = True
    saved = []
    again = front.run_variants(pack, model, clip, {}, [variant], 1, LATENT_HW, lambda row: None, thresholds=(0.4,),
                               fewer=True, done=first, save=lambda out: saved.append(len(out[variant]["rows"])))
    rows = {r["name"]: r for r in again[variant]["rows"]}
    assert list(rows) == ["LazyCache 0.4", "fewer steps 3/4", "fewer steps 2/4"] and saved == [1, 2, 3]
    assert rows["LazyCache 0.4"].get("measured_before")  # kept, not measured again
    assert [rows[f"fewer steps {k}/4"]["model_calls"] for k in (3, 2)] == [3, 2]
    setup = {"fixture": "photo", "steps": 6, "seeds": 2, "sampler": "euler", "scheduler": "sgm_uniform",
             "command": "python -m benchmarks.bench_front --variants euler/sgm_uniform/4 --variant-seeds 1"}
    assert variant_seeds(setup, {"rows": []}, 8) == 1 and variant_seeds({}, {"rows": []}, 8) == 8
    (tmp_path / "front_photo.json").write_text(json.dumps({"setup": setup, "results": [], "variants": again}))
    fronts = front_margins.load_fronts(tmp_path)
    assert list(fronts) == ["photo@" + variant] == list(variant_fronts("photo", {"setup": setup, "variants": again}))
    assert {k: fronts["photo@" + variant]["setup"][k] for k in ("steps", "seeds", "variant_of")} == {
        "steps": 4, "seeds": 1, "variant_of": "photo"}


def test_every_committed_front_and_sampler_variant_measures_fewer_steps():
    """Issue 29: fewer steps is in every committed front (docs/benchmarks/front_*.json) and in each of their sampler
    variants, so the margins tables, the docs pages' advice and its check (front_margins.load_fronts) see them all."""
    import json

    from benchmarks import front_margins
    names = set()
    for path in sorted(front_margins.JSON_DIR.glob("front_*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        stem = path.stem.removeprefix("front_")
        fronts = {stem: data["results"], **{f"{stem}@{v}": r["rows"] for v, r in data.get("variants", {}).items()}}
        for name, rows in fronts.items():
            assert any(r["family"] == front_report.FEWER for r in rows), name
        names |= set(fronts)
    assert len(names) >= 10 and set(front_margins.load_fronts()) == names
