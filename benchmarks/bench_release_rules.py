"""Where the pack's rules differ from the official release's, each difference measured alone.

The ``rules`` knob (``sdtm_ops.knobs.RELEASE_RULES``) runs the pack's rules ("pack"), the release's
("release", the reference preset) or the pack's with some release rules switched on ("pack+NAME"). On the
deep and dense photo fixtures (docs/FIXTURE.md; dense at 32 x 32 tokens, as ``bench_front``'s dense-32), at
30 and 50 steps, the reference preset's settings run with: the pack's rules, the release's, and the pack's
with ONE release rule switched on, each rule in turn; PSNR and SSIM against the unpatched image of the same
seed and prompt and the image tokens the attention and the MLP saw (``bench_front``'s measurement: its
hooks count them). The JSON is written after each setting; a second run resumes where the first stopped.
``--table`` writes METHOD.md's table "Where the pack differs from the release" from the JSON (between its
markers); ``tests/test_release_rules.py`` checks that the two agree.

    .venv/bin/python -m benchmarks.bench_release_rules                 # 2 seeds, about an hour on one core
    .venv/bin/python -m benchmarks.bench_release_rules --table         # METHOD.md's table, from the JSON
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from benchmarks.bench_front import FIXTURES, JSON_DIR, measure_setting, prepare_run, summary
from benchmarks.front_settings import Setting, config_params, sdtm_advanced
from harness.comfy_env import REPO, import_comfy, load_pack
from photo_fixture import photo_codec
from photo_fixture.sample import SAMPLER, SCHEDULER

OUT = JSON_DIR / "release_rules.json"
METHOD = REPO / "docs" / "METHOD.md"
TABLE_START = "<!-- release-rules-table: python -m benchmarks.bench_release_rules --table -->\n"
TABLE_END = "<!-- end release-rules-table -->"
FIXTURE_NAMES = ("deep", "dense-32")
STEP_COUNTS = (30, 50)
SEEDS, SIZE_PX = 2, 128
# The release's limits that the pack removes (docs/shared method notes, section 8): no image changes with them
# on a square, whole-window, single-sampler run, so they are stated, not measured.
LIMITS = (
    ("token grid", "square grids only, side divisible by the window (1344x768 fails)",
     "any H, W; tokens outside whole windows stay unmerged"),
    ("steps", "counted by popping one entry per transformer call: separate cond/uncond calls, img2img, two "
              "samplers and skip-layer guidance break it", "read from the sampler's sigma schedule"),
    ("SD3.5-medium (MMDiT-X)", "crashes; the second attention is switched off",
     "the second attention runs, on merged tokens"),
    ("patching", "swaps classes, cannot be undone, patching twice raises",
     "a clone patched through ComfyUI's extension points"),
    ("merge RNG", "forked from the device RNG", "seeded from the sampler's seed"),
    ("cache", "a batch-size change silently disables blending", "keyed by batch layout; nothing fails silently"),
)


def settings(pack) -> list[Setting]:
    """The reference preset's settings with the pack's rules, the release's, and the pack's + one release rule."""
    base = pack.presets.PRESETS["reference"][0]
    names = ["pack", "release", *(f"pack+{rule}" for rule in pack.ops.knobs.RELEASE_RULES)]
    return [Setting(name, "rules", config_params(pack, base.replace(rules=name)),
                    sdtm_advanced(pack, base.replace(rules=name))) for name in names]


def row_of(row: dict) -> dict:
    keep = ("name", "psnr_mean", "psnr_min", "ssim_mean", "attn_tokens_vs_unpatched", "mlp_tokens_vs_unpatched",
            "params", "seeds")
    return {key: row[key] for key in keep}


def load(path=OUT) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"setup": {}, "results": {}}


def measure(seeds: int, out=OUT, only: set[str] | None = None) -> dict:
    import_comfy()
    pack = load_pack()
    data = load(out)
    data["setup"] = {"fixtures": list(FIXTURE_NAMES), "steps": list(STEP_COUNTS), "seeds": seeds, "size_px": SIZE_PX,
                     "sampler": SAMPLER, "scheduler": SCHEDULER, "torch": torch.__version__,
                     "machine": platform.processor() or platform.machine(),
                     "threads": torch.get_num_threads(), "command": "python -m benchmarks.bench_release_rules"}
    for fixture in FIXTURE_NAMES:
        model, clip = photo_codec.load_fixture(FIXTURES[fixture])
        latent_hw = (SIZE_PX // photo_codec.PIXELS_PER_LATENT,) * 2
        for steps in STEP_COUNTS:
            key = f"{fixture}/{steps}"
            done = {r["name"]: r for r in data["results"].get(key, []) if len(r["seeds"]) == seeds}
            todo = [s for s in settings(pack) if s.name not in done and (only is None or s.name in only)]
            if not todo:
                continue
            started = time.perf_counter()
            run = prepare_run(pack, model, clip, seeds, steps, latent_hw, SAMPLER, SCHEDULER)
            for setting in todo:
                row = row_of(summary(measure_setting(run, setting), run))
                done[row["name"]] = row
                order = [s.name for s in settings(pack)]
                data["results"][key] = sorted(done.values(), key=lambda r: order.index(r["name"]))
                out.write_text(json.dumps(data, indent=1) + "\n")
                print(f"[{key}] {row['name']}: PSNR {row['psnr_mean']:.2f} dB, attention "
                      f"{100 * row['attn_tokens_vs_unpatched']:.1f}%, MLP {100 * row['mlp_tokens_vs_unpatched']:.1f}% "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
    return data


def effect(data: dict, key: str, name: str) -> str:
    """PSNR of setting ``name`` minus the pack's at ``key`` (fixture/steps): the mean, then each seed's."""
    rows = {r["name"]: r for r in data["results"][key]}
    seeds = [a["psnr"] - b["psnr"] for a, b in zip(rows[name]["seeds"], rows["pack"]["seeds"])]
    mean = rows[name]["psnr_mean"] - rows["pack"]["psnr_mean"]
    return f"{mean:+.2f} dB ({' / '.join(f'{d:+.2f}' for d in seeds)})"


def method_table(data: dict, rules: dict) -> str:
    """METHOD.md's table: one row per rule (the release, the pack, the PSNR change of switching the release's
    rule on alone in the pack, per fixture and step count: the mean and, in brackets, each seed's), the release
    as a whole, then the release's limits."""
    keys = [f"{f}/{s}" for f in data["setup"]["fixtures"] for s in data["setup"]["steps"]]
    head = ("| rule | the release | the pack | " + " | ".join(f"{k} steps" for k in keys) + " |\n"
            + "|---" * (3 + len(keys)) + "|\n")
    lines = []
    for name, (release, pack) in rules.items():
        cells = " | ".join(effect(data, k, "pack+" + name) for k in keys)
        lines.append(f"| `{name}` | {release} | {pack} | {cells} |")
    cells = " | ".join(effect(data, k, "release") for k in keys)
    lines.append(f"| all six (`rules: release`) | the release | the pack | {cells} |")
    pack_cells = " | ".join(f"{next(r for r in data['results'][k] if r['name'] == 'pack')['psnr_mean']:.2f} dB"
                            for k in keys)
    lines.append(f"| (the pack's own PSNR against the unpatched image) | | | {pack_cells} |")
    blank = " | ".join("not measured: no image changes" for _ in keys)
    lines += [f"| {what} (a limit) | {release} | {pack} | {blank} |" for what, release, pack in LIMITS]
    return head + "\n".join(lines) + "\n"


def method_section(text: str) -> str:
    """The table between METHOD.md's markers."""
    start = text.index(TABLE_START) + len(TABLE_START)
    return text[start:text.index(TABLE_END, start)]


def write_table(rules: dict) -> None:
    text = METHOD.read_text()
    METHOD.write_text(text.replace(TABLE_START + method_section(text), TABLE_START + method_table(load(), rules)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--table", action="store_true", help="write METHOD.md's table from the JSON and stop")
    parser.add_argument("--only", default=None, help="comma-separated setting names (default: all)")
    args = parser.parse_args(argv)
    if args.table:
        import_comfy()
        write_table(load_pack().ops.knobs.RELEASE_RULES)
        print(method_section(METHOD.read_text()), end="")
        return
    measure(args.seeds, only=set(args.only.split(",")) if args.only else None)


if __name__ == "__main__":
    main()
