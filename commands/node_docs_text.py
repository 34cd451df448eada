"""The words of the SDTM nodes' docs pages (web/js/docs, written by ``python -m commands.node_docs``), English
and Chinese side by side: one entry per knob, preset, node input and section.

Where the English already lives in the pack (a knob's tooltip in ``sdtm_ops/knobs.py``, a node input's
tooltip, a preset's purpose in ``nodes/presets.py``), the page takes it from there and this table holds only
its translation, with ``for``: the digest (``node_docs.digest``) of the English it translates. When that
English changes, ``python -m commands.node_docs check`` (and the tests) fail until the translation is revised
and its ``for`` set to the digest the message gives. Texts with ``{name}`` fields are filled from the
measured front (``node_docs.front_figures``).
"""
from __future__ import annotations

# Translations of the knob tooltips (sdtm_ops/knobs.py KNOBS), by node input name.
KNOB_ZH: dict[str, dict[str, str]] = {
    "method": {"for": "5077bce2", "zh": "sdtm：先结构后细节的合并。tome：普通 ToMe（每个窗口随机选 dst、全局二分匹配、每个合并步都合并"
                                        "注意力和 MLP），使用同一比例调度，用于 A/B 对比。"},
    "ratio": {"for": "4ab0237c", "zh": "余弦比例调度的中心：采样中段合并掉的图像 token 比例（第一步为 ratio + deviation，最后一步为 "
                                       "ratio - deviation）。0 关闭合并，与 deviation 无关。"},
    "deviation": {"for": "571d15bc", "zh": "调度的半幅：第一步为 ratio + deviation，最后一步为 ratio - deviation（限制在 0..1）。"},
    "switch_percent": {"for": "f037bdda", "zh": "结构阶段的最后进度（合并整个窗口，缩短注意力）；之后的步是细节步（合并单个 token，只作用于 "
                                                "MLP）。{percent_help}"},
    "start_percent": {"for": "b8403d7f", "zh": "合并从这个进度开始。{percent_help}"},
    "end_percent": {"for": "b15d7651", "zh": "合并在这个进度之后停止。{percent_help}"},
    "window": {"for": "202907e5", "zh": "窗口边长 k：k x k 的 token 窗口（2 = 2x2，与论文相同）。不在完整窗口内的 token 永不合并。"},
    "priority_weight": {"for": "5d4373ae", "zh": "a_s：结构阶段对长期被合并的 token 所在窗口的偏好程度，使合并模式随时间保持稳定。"},
    "protect_steps_every": {"for": "c1c14562", "zh": "每第 P 步（s % P == 0）以完整长度运行并刷新缓存。0 = 关闭。"},
    "protect_blocks_every": {"for": "730bc04c", "zh": "f > 0：第 l % f == 0 个块和最后一个块从不合并。0 = 关闭。"},
    "block_start": {"for": "3b52e7f8", "zh": "第一个参与合并的联合块（从 0 开始计）。"},
    "block_end": {"for": "15a6216b", "zh": "最后一个参与合并的联合块；-1 = 模型的最后一个块。"},
    "cache": {"for": "0bc82788", "zh": "保留受保护步的注意力和 MLP 输出，并把它们混合到被合并的位置。每个块占用两个完整大小的张量（摘要中会"
                                       "记录大小）；采样结束时释放，但中途停止的运行会在 CPU 上保留一份副本，供其后续运行接续。"},
    "cache_fresh_weight": {"for": "c26743e8", "zh": "mcw：混合时被合并位置上新值的权重（1 = 不混合）。"},
    "merge_mode": {"for": "b8652918", "zh": "mean：一组 token 变为它们的平均值。prune：保留其 dst token 的值（参考实现的伪合并）。"},
    "merge_seed": {"for": "ed585174", "zh": "合并随机数生成器（随机选择 dst）的种子；-1 = 采样器的种子。"},
    "round_to": {"for": "ee070793", "zh": "合并数量向下取整为这个数的倍数（参考实现为 16；8 或 16 的倍数适合 GPU 内核）。"},
    "proportional_attention": {"for": "a11a12d8", "zh": "在缩短的注意力中，给每个被合并的 key 的 logits 加上 log(组大小)，使 s 个 "
                                                        "token 组成的组得到其 s 个成员应得的注意力（ToMe 的比例注意力）。文本 key 不变。"
                                                        "它以注意力掩码的形式传入，因此在 GPU 上 PyTorch 不能使用 flash-attention 内核"
                                                        "（改用 memory-efficient 内核）。"},
    "structure_attention": {"for": "70ef426d", "zh": "merged：结构步在合并后的窗口上计算注意力（论文的做法）。full：结构步保持完整长度"
                                                     "的注意力，只合并 MLP 的输入，与细节步相同。"},
    "rules": {"for": "85076022", "zh": "pack：本插件的规则。release：官方发布版的规则，逐步一致：结构阶段的优先级加成用计数器的均值"
                                       "（而非最大值）归一化；细节阶段每个 dst 都算作已合并并与缓存混合，窗口内计数器相同时取窗口的第一个"
                                       "成员作为 dst（无论种子如何，图像都相同）；结构阶段在绝对步号处结束（switch × 49：0.41 时为第 "
                                       "20 步，与总步数无关：21 步及以下时每个合并步都是结构步）；进度按步数计算（s / (S - 1)），而非"
                                       " sigma。docs/METHOD.md 测量了每一项差异。"},
}

# sdtm_ops.knobs.PERCENT_HELP, which ends the tooltips of the three progress knobs
PERCENT_HELP_ZH = {"for": "06acb496", "zh": "进度按模型的 sigma 刻度读取，与 ComfyUI 自带的 start/end percent 相同：使用 sgm_uniform "
                                            "或 simple 调度器时，S 步中的第 s 步约在 s/S（30 步时 0.41 表示第 0-12 步）；拆分到多个"
                                            "采样器的运行沿用单次运行的计划。"}

# On SDTM (SD3 / SD3.5), before the tooltip of a knob whose -1 keeps the preset's value
PRESET_VALUE_NOTE = {"en": "{value} keeps the preset's value. ", "zh": "{value} 表示沿用预设的值。"}

# Node inputs and outputs that are not knobs: (node id, input name or "output"). ``for`` is the digest of the
# input's tooltip in the node's definition; ``en`` (optional) replaces that tooltip on the page.
INPUT_TEXT: dict[tuple[str, str], dict[str, str]] = {
    ("SDTM_Apply", "model"): {"for": "e9294527", "zh": "SD3 系列模型（SD3-medium、SD3.5-medium、SD3.5-large、SD3.5-large-turbo）。"
                                                       "它不会被修改：返回的是打过补丁的副本。"},
    ("SDTM_Apply", "preset"): {"for": "771555e2", "en": "How to merge: see Presets below.", "zh": "合并方式，见下方的“预设”。"},
    ("SDTM_Apply", "output"): {"for": "2a829533", "zh": "模型的副本，其联合块用 SDTM 合并 token。"},
    ("SDTM_ApplyAdvanced", "model"): {"for": "ae6e43a0", "zh": "SD3 系列模型。它不会被修改：返回的是打过补丁的副本。"},
    ("SDTM_ApplyAdvanced", "output"): {"for": "cc811762", "zh": "模型的副本，其联合块合并 token。"},
    ("SDTM_RunReport", "model"): {"for": "80f03868", "zh": "采样器所用的 SDTM 节点的 MODEL 输出（或由它克隆出的模型）。"},
    ("SDTM_RunReport", "samples"): {"for": "f9a33d62", "zh": "采样器输出的 LATENT：报告的是生成它的那次运行（多个采样器可以共用一个"
                                                             "打过补丁的模型）。不连接时，报告该模型最新的一次运行。"},
    ("SDTM_RunReport", "output"): {"for": "a5abd996", "zh": "该次运行的统计数据，JSON 文本。"},
    ("SDTM_MergeMap", "model"): {"for": "80f03868", "zh": "采样器所用的 SDTM 节点的 MODEL 输出（或由它克隆出的模型）。"},
    ("SDTM_MergeMap", "image"): {"for": "9a68d4db", "zh": "该次运行解码后的图像，合并图画在它上面（使用其中第一张）；它必须与该次运行"
                                                          "的 latent 宽高比相同。"},
    ("SDTM_MergeMap", "samples"): {"for": "ce6f13bb", "zh": "采样器输出的 LATENT：合并图显示生成它的那次运行（不连接时显示模型最近的"
                                                            "一次运行，并给出警告）。"},
    ("SDTM_MergeMap", "block"): {"for": "7ff71f6c", "zh": "显示哪个联合块的合并；-1 = 参与合并的块中居中的那个。"},
    ("SDTM_MergeMap", "steps"): {"for": "7669d056", "zh": "'auto'（在整个运行中均匀挑选最多 6 个合并步）或以逗号分隔的步号（从 0 开始）。"},
    ("SDTM_MergeMap", "opacity"): {"for": "aaf70ab8", "zh": "被合并 token 的着色强度。"},
    ("SDTM_MergeMap", "output"): {"for": "dbae5426", "zh": "合并图：每步一个面板，以及逐步的 token 图表。"},
}

# What each preset is for, on the pages; ``for`` is the digest of the preset's purpose in nodes/presets.py.
PRESET_TEXT: dict[str, dict[str, str]] = {
    "reference": {"for": "6d3ad36c", "en": "comparing with the paper: the official release step for step, its rules "
                                           "included (at 21 steps or fewer every merging step is a structure step)",
                  "zh": "与论文对比：逐步复现官方发布版，包括其规则（21 步及以下时每个合并步都是结构步）"},
    "quality": {"for": "e6b5ab86", "en": "the preset that changes the image least (attention stays full length)",
                "zh": "改变图像最少的预设（注意力保持完整长度）"},
    "balanced": {"for": "68950209", "en": "the default, between quality and fast in speed",
                 "zh": "默认预设，速度介于 quality 和 fast 之间"},
    "fast": {"for": "7aeb9472", "en": "the preset with the most speed",
             "zh": "速度最快的预设"},
    "turbo": {"for": "6cbe7b83", "en": "made for SD3.5-large-turbo and other 4-8 step models: it merges little",
              "zh": "为 SD3.5-large-turbo 及其他 4-8 步的模型而设：合并很少"},
}

# Free text, by section. Fields in braces are filled by node_docs (figures from the measured front and the pack).
SECTIONS: dict[str, dict[str, str]] = {
    "inputs": {"en": "Inputs", "zh": "输入"},
    "output": {"en": "Output", "zh": "输出"},
    "input": {"en": "- **`{name}`** ({values}; default {default}): {effect}",
              "zh": "- **`{name}`**（{values}；默认 {default}）：{effect}"},
    "input_link": {"en": "- **`{name}`** ({values}): {effect}", "zh": "- **`{name}`**（{values}）：{effect}"},
    "range": {"en": "{low} to {high}", "zh": "{low} 到 {high}"},
    "default_mark": {"en": " (default)", "zh": "（默认）"},
    "output_line": {"en": "- **{name}**: {effect}", "zh": "- **{name}**：{effect}"},
    "any_text": {"en": "text", "zh": "文本"},
    "on_off": {"en": "on / off", "zh": "开 / 关"},
    "optional": {"en": ", optional", "zh": "，可选"},
    "progress": {"en": "**Progress** ({names}): {help}", "zh": "**进度**（{names}）：{help}"},
    "footer": {"en": "ComfyUI-SDTM {version} · {node} · English", "zh": "ComfyUI-SDTM {version} · {node} · 中文"},

    "SDTM_Apply.intro": {
        "en": "Speeds up SD3 and SD3.5 by merging redundant image tokens inside the MMDiT joint blocks: whole "
              "uniform 2x2 windows in the early structure steps, single tokens into their most similar partner in "
              "the late detail steps. It returns a patched copy of the model; put it between the model loader (and "
              "any LoRA) and the sampler.",
        "zh": "在 MMDiT 联合块内合并冗余的图像 token，为 SD3 和 SD3.5 加速：早期的结构步合并整块均匀的 2x2 窗口，后期的"
              "细节步把单个 token 合并到与它最相似的伙伴。它返回模型的一个打过补丁的副本；把它放在模型加载器（以及 "
              "LoRA）和采样器之间。"},
    "SDTM_ApplyAdvanced.intro": {
        "en": "Every setting of the method, for tuning and A/B tests; the defaults are the official release's (the "
              "reference preset), and method tome runs plain ToMe on the same schedule. Use SDTM (SD3 / SD3.5) "
              "with a preset unless you need a knob it does not show; its page has the measured presets and what "
              "kept more of the image on the fixtures (fewer steps, LazyCache).",
        "zh": "方法的全部设置，用于调参和 A/B 测试；默认值即官方发布版的设置（reference 预设），method 选 tome 时在同一"
              "调度上运行普通 ToMe。除非需要 SDTM (SD3 / SD3.5) 没有显示的参数，否则请使用它的预设；它的说明页给出了"
              "各预设的实测结果，以及在测试模型上什么保留了更多图像（减少步数、LazyCache）。"},
    "SDTM_RunReport.intro": {
        "en": "Shows what SDTM did in the sampling run that produced the connected LATENT: which steps ran at full "
              "length and which were structure or detail steps, how many image tokens the attention and the MLP "
              "computed, the FLOP-model speedup, the wall time and the memory the run held. A summary appears in "
              "the node; the whole record is JSON on its STRING output.",
        "zh": "显示生成所连接 LATENT 的那次采样运行中 SDTM 做了什么：哪些步以完整长度运行、哪些是结构步或细节步，"
              "注意力和 MLP 计算了多少图像 token，FLOP 模型估算的加速比、实际耗时以及该次运行占用的内存。摘要显示在"
              "节点中；完整记录以 JSON 形式出现在它的 STRING 输出上。"},
    "SDTM_MergeMap.intro": {
        "en": "Draws which image tokens a sampling run merged: for a few steps, every merged group of tokens tinted "
              "in its own colour over the decoded image, and below a per-step chart of the share of image tokens "
              "the attention and the MLP computed. Use it to see where SDTM acts on your image before you change "
              "the ratio or the switch.",
        "zh": "画出一次采样运行合并了哪些图像 token：在若干步上，每个被合并的 token 组在解码后的图像上以各自的颜色着色，"
              "下方是逐步的图表，显示注意力和 MLP 计算的图像 token 比例。调整 ratio 或 switch 之前，可以用它查看 SDTM "
              "在你的图像上作用于哪里。"},

    "presets.title": {"en": "Presets", "zh": "预设"},
    "preset.use": {"en": "- What it is: {use}.", "zh": "- 它是：{use}。"},
    "preset.settings": {"en": "- Settings: {settings}.", "zh": "- 设置：{settings}。"},
    "preset.flops": {"en": "- FLOP model at 1024x1024, {steps} steps: {flops} (SD3-medium / SD3.5-medium / SD3.5-large).",
                     "zh": "- FLOP 模型，1024x1024，{steps} 步：{flops}（SD3-medium / SD3.5-medium / SD3.5-large）。"},
    "preset.measured": {"en": "- On the fixture at 64x64 tokens: {at64}. At 32x32 tokens: {at32}.",
                        "zh": "- 测试模型，64x64 token：{at64}。32x32 token：{at32}。"},
    "preset.measured_value": {"en": "{psnr} dB at {speed}x, {margin}", "zh": "{speed}x 时 {psnr} dB，{margin}"},
    "preset.margin": {"en": "{margin} dB {word} {baseline} at that speed", "zh": "{word}同速度的{baseline} {margin} dB"},
    "preset.and": {"en": " and ", "zh": "，"},
    "preset.runs_sep": {"en": "; ", "zh": "；"},
    "preset.lazy": {"en": "LazyCache", "zh": " LazyCache"},
    "preset.fewer": {"en": "fewer steps", "zh": "减少步数"},
    "preset.behind": {"en": "behind", "zh": "落后"},
    "preset.ahead": {"en": "ahead of", "zh": "领先"},
    "preset.bound_behind": {"en": "at least {margin} dB behind {baseline} at that speed",
                            "zh": "落后同速度的{baseline}至少 {margin} dB"},
    "preset.bound_ahead": {"en": "at most {margin} dB ahead of {baseline} at that speed",
                           "zh": "领先同速度的{baseline}至多 {margin} dB"},
    "preset.turbo": {"en": "- Not on the 30-step fronts below. On the photo fixture at few steps: {runs}.",
                     "zh": "- 不在下面 30 步的对比中。照片测试模型在少步数下：{runs}。"},
    "preset.turbo_at": {"en": "{steps} steps {sampler} / {scheduler}: {measured}",
                        "zh": "{steps} 步 {sampler} / {scheduler}：{measured}"},
    "presets.note": {
        "en": "The FLOP model counts the joint blocks' compute for the preset's schedule. The fixture columns are "
              "measured through ComfyUI's KSampler on the dense photo fixture, a small 8-block SD3-architecture "
              "model trained in this repository on photographs ({steps} steps {sampler} / {scheduler}, {seeds} "
              "seeds, speed as the FLOP model prices the counted tokens for SD3-medium at 1024x1024), at 64x64 "
              "image tokens (SD3 at 1024x1024) and at 32x32 (SD3 at 512x512): PSNR of the image against the same "
              "seed without SDTM, and how far that is behind or ahead of what the model without SDTM keeps at fewer "
              "steps and what core LazyCache keeps at the same speed (between two measured points, interpolated; "
              "below the slowest one, a bound). Not measured on SD3's own weights or on a GPU; tables and commands: "
              "docs/BENCHMARKS.md in the repository.",
        "zh": "FLOP 模型统计该预设调度下联合块的计算量。测试模型各列是通过 ComfyUI 的 KSampler 在 dense 照片测试模型上"
              "测得的（本仓库用照片训练的 8 个块的小型 SD3 架构模型；{steps} 步 {sampler} / {scheduler}，{seeds} 个种子，"
              "速度按 FLOP 模型把计数的 token 折算为 SD3-medium 1024x1024），分别在 64x64 个图像 token（相当于 SD3 的 "
              "1024x1024）和 32x32 个（相当于 SD3 的 512x512）下：与不用 SDTM 的同一种子图像相比的 PSNR，以及它落后"
              "或领先同速度下不用 SDTM 而减少步数、以及 ComfyUI 自带 LazyCache 的量（在两个实测点之间线性插值；低于最慢"
              "的实测点时为一个界）。未在 SD3 的真实权重或 GPU 上测量；表格和命令见仓库中的 docs/BENCHMARKS.md。"},
    "presets.chart": {"en": "PSNR against the same seed without SDTM, by estimated speed",
                      "zh": "与不用 SDTM 的同一种子相比的 PSNR，按估算速度"},

    "advice.title": {"en": "Which to use when (on the fixtures)", "zh": "何时用哪一个（测试模型上的结果）"},
    "advice.body": {
        "en": "On the pack's committed fixture fronts SDTM kept less of the image than simply running fewer steps, "
              "in every regime{lead_except_en}; it is here to compare with the paper and to be measured on your own model.\n\n"
              "- **20-50 steps** (a base pass): lower the step count, or use core **LazyCache**. On {base_fronts} "
              "fixture fronts fewer steps kept more of the image than every preset at the same compute, by at least "
              "{base_gap_min} dB (up to {base_gap_max} dB){base_except_en} LazyCache and fewer steps trade places: from "
              "{base_lazy_behind} dB behind to {base_lazy_ahead} dB ahead of fewer steps at LazyCache's speeds. "
              "LazyCache is ahead of every preset too ({lazy_lead_64} dB at 64x64 tokens, {lazy_lead_32} dB at "
              "32x32).\n"
              "- **4-8 steps**: lower the step count. Fewer steps kept at least {few_gap_min} dB more than every "
              "preset, turbo included ({few_fronts} fronts){few_except_en} LazyCache reached at most {few_lazy_speed}x "
              "and was nowhere ahead of fewer steps.\n"
              "- **A hires or img2img pass**: run the pass with fewer steps at the same denoise. It kept at least "
              "{pass_gap_min} dB more than every preset ({pass_fronts} fronts){pass_except_en} LazyCache reached at "
              "most {pass_lazy_speed}x there and was nowhere ahead of fewer steps.\n"
              "- **Stacked**: SDTM with LazyCache, in either order, stayed at least {base_stack_gap} dB behind fewer "
              "steps at 20-50 steps; the best stack, {best_stack_64}, was {best_stack_gap_64} dB behind LazyCache "
              "alone at 64x64 tokens.\n"
              "- A **held-out check** (`python -m benchmarks.advice_check`: sampler uni_pc / simple, other seeds, "
              "img2img at denoise 0.65) disagreed with this advice for: {heldout_en}; its figures are in "
              "docs/BENCHMARKS.md. With other samplers the order is not settled.\n"
              "- The fixtures are small models (3 and 8 blocks) on a CPU; SD3's own weights may behave otherwise. "
              "`python -m commands.evaluate front --checkpoint FILE` measures this comparison on your model and "
              "GPU. Core EasyCache skips nothing on SD3.",
        "zh": "在本节点包已提交的测试模型对比中，无论哪种用法，SDTM 保留的图像都不如直接减少步数{lead_except_zh}；它用于与论文对比，以及在你自己的"
              "模型上测量。\n\n"
              "- **20-50 步**（基础采样）：减少步数，或使用 ComfyUI 自带的 **LazyCache**。在 {base_fronts} 个测试模型的对比中，"
              "相同计算量下减少步数比每个预设都保留了更多图像，至少多 {base_gap_min} dB（最多 {base_gap_max} dB）{base_except_zh}"
              "LazyCache 与减少步数互有胜负：在 LazyCache 的各个速度下，从落后减少步数 {base_lazy_behind} dB 到领先 "
              "{base_lazy_ahead} dB。LazyCache 也领先每个预设（64x64 token 时 {lazy_lead_64} dB，32x32 时 "
              "{lazy_lead_32} dB）。\n"
              "- **4-8 步**：减少步数。减少步数比每个预设（包括 turbo）至少多保留 {few_gap_min} dB（{few_fronts} 个对比）{few_except_zh}"
              "LazyCache 最多只达到 {few_lazy_speed}x，且在任何速度下都不领先减少步数。\n"
              "- **高清修复（hires）或图生图（img2img）阶段**：在相同 denoise 下用更少的步数运行该阶段。它比每个预设至少多"
              "保留 {pass_gap_min} dB（{pass_fronts} 个对比）{pass_except_zh}LazyCache 在那里最多达到 {pass_lazy_speed}x，且在任何速度下"
              "都不领先减少步数。\n"
              "- **组合使用**：SDTM 与 LazyCache 组合（顺序不限）在 20-50 步时仍落后减少步数至少 {base_stack_gap} dB；"
              "最好的组合 {best_stack_64} 在 64x64 token 时比单用 LazyCache 差 {best_stack_gap_64} dB。\n"
              "- **留出检验**（`python -m benchmarks.advice_check`：采样器 uni_pc / simple、其他种子、denoise 0.65 的图生图）"
              "在以下情形与本建议不一致：{heldout_zh}；数据见 docs/BENCHMARKS.md。换用其他采样器时，孰优孰劣尚无定论。\n"
              "- 测试模型是在 CPU 上运行的小模型（3 个和 8 个块）；SD3 的真实权重可能表现不同。"
              "`python -m commands.evaluate front --checkpoint FILE` 会在你的模型和 GPU 上测量同样的对比。"
              "ComfyUI 自带的 EasyCache 在 SD3 上不跳过任何步。"},

    "advice.regime_base": {"en": "20-50 steps", "zh": "20-50 步"},
    "advice.end": {"en": ".", "zh": "。"},
    "advice.except": {"en": ", save {count}: {cases}; there the two are close.",
                      "zh": "，只有 {count} 处例外：{cases}；在那里两者接近。"},
    "advice.except_case": {"en": "on {where} {preset} kept {margin} dB more than fewer steps at {speed}x",
                           "zh": "在{where}上，{preset} 在 {speed}x 时比减少步数多保留 {margin} dB"},
    "advice.where_pass": {"en": "the {kind} pass at denoise {denoise} ({steps} steps, {seeds} seeds)",
                          "zh": "denoise {denoise} 的{kind}阶段（{steps} 步，{seeds} 个种子）"},
    "advice.where_run": {"en": "the {fixture} fixture at {steps} steps {sampler}/{scheduler} ({seeds} seeds)",
                         "zh": "{fixture} 测试模型 {steps} 步 {sampler}/{scheduler}（{seeds} 个种子）"},
    "advice.kind_hires": {"en": "hires", "zh": "高清修复"},
    "advice.kind_img2img": {"en": "img2img", "zh": "图生图"},
    "advice.count_one": {"en": "one case", "zh": "1"},
    "advice.count_many": {"en": "{n} cases", "zh": "{n}"},
    "advice.lead_except": {"en": " but for {count} where it was less than {limit} dB ahead (below)",
                           "zh": "（只有 {count} 处例外，领先不到 {limit} dB，见下）"},
    "advice.regime_few": {"en": "4-8 steps", "zh": "4-8 步"},
    "advice.regime_pass": {"en": "a hires / img2img pass", "zh": "高清修复 / 图生图阶段"},
    "advice.list_sep": {"en": ", ", "zh": "、"},
    "advice.none": {"en": "none", "zh": "无"},

    "after.title": {"en": "After the run", "zh": "运行之后"},
    "after.body": {
        "en": "Connect the patched MODEL and the sampler's LATENT to **SDTM Run Report** to see what the run merged "
              "and its FLOP-model speedup, and to **SDTM Merge Map** (with the decoded IMAGE) to see where. Each run "
              "also logs one summary line to the console. A run split over several samplers (KSamplerAdvanced 0-4 "
              "then 4-8 on the returned latent) gives the single run's image.",
        "zh": "把打过补丁的 MODEL 和采样器的 LATENT 连接到 **SDTM Run Report**，查看该次运行合并了什么以及 FLOP 模型估算"
              "的加速比；连接到 **SDTM Merge Map**（再加上解码后的 IMAGE）查看合并发生在哪里。每次运行还会在控制台打印"
              "一行摘要。拆分到多个采样器的运行（先 KSamplerAdvanced 0-4，再在返回的 latent 上 4-8）得到与单次运行相同"
              "的图像。"},

    "advanced.presets_title": {"en": "The presets as Advanced settings", "zh": "用 Advanced 设置表示的预设"},
    "advanced.presets_intro": {
        "en": "Each preset of SDTM (SD3 / SD3.5) is these inputs of this node; every other input at its default:",
        "zh": "SDTM (SD3 / SD3.5) 的每个预设等于本节点的以下输入，其余输入保持默认值："},
    "advanced.defaults": {"en": "the defaults", "zh": "默认值"},
    "advanced.notes_title": {"en": "Good to know", "zh": "须知"},
    "advanced.notes": {
        "en": "- ratio 0 turns merging off, whatever the deviation: the model then samples exactly as without SDTM.\n"
              "- Blocks that do not merge at a step run ComfyUI's own block, unchanged.\n"
              "- method tome is a baseline for comparisons, not a faster SDTM: on the photo fixtures it kept "
              "less of the image than SDTM at the same compute.",
        "zh": "- ratio 为 0 时关闭合并，与 deviation 无关：模型的采样结果与不用 SDTM 完全相同。\n"
              "- 某一步不合并的块运行 ComfyUI 自己的块，不做任何改动。\n"
              "- method 选 tome 是用于对比的基线，而不是更快的 SDTM：在照片测试模型上，相同计算量下它保留的图像比 SDTM "
              "少。"},

    "report.reading_title": {"en": "Reading the summary", "zh": "如何阅读摘要"},
    "report.reading": {
        "en": "- **SDTM preset ...: N steps (a-b), seed S**: the preset (or Advanced method), the steps this run "
              "sampled, the merge seed. The second part of a split run says it continues the run that stopped at "
              "its first step.\n"
              "- **full: steps ...**: protected steps at full length; they refresh the blending cache.\n"
              "- **structure: steps ...; attention x%, MLP y% of image tokens**: steps that merge whole 2x2 windows; "
              "the shares are the image tokens the attention and the MLP computed (lower is faster).\n"
              "- **detail: steps ...**: steps that merge single tokens for the MLP only (attention stays at 100%).\n"
              "- **FLOP-model speedup**: the compute the run saved in the joint blocks, priced for this model and "
              "image size. It estimates the transformer part only, not the text encoders, the VAE or the sampler.\n"
              "- **wall**: seconds of sampling after the model loaded; the first model evaluation is given apart "
              "(it includes warm-up and compilation).\n"
              "- **cache ... MiB peak, n blends**: the blending cache's memory and how often cached values were "
              "blended in; *cache off* when the setting uses none.\n"
              "- **state ... MiB peak; kept for continuations ...**: everything the run held (cache, priority "
              "counters, merge maps when a Merge Map reads the model), and what it keeps on the CPU for a run "
              "that continues it.\n"
              "- With dpm_fast or dpm_adaptive a further line names the steps the sampler evaluated (it picks its "
              "own points).",
        "zh": "- **SDTM preset ...: N steps (a-b), seed S**：预设（或 Advanced 的 method）、该次运行采样的步、合并种子。"
              "拆分运行的第二部分会注明它接续在其第一步停止的运行。\n"
              "- **full: steps ...**：以完整长度运行的受保护步；它们刷新混合缓存。\n"
              "- **structure: steps ...; attention x%, MLP y% of image tokens**：合并整个 2x2 窗口的步；比例是注意力和 "
              "MLP 计算的图像 token 所占份额（越低越快）。\n"
              "- **detail: steps ...**：只为 MLP 合并单个 token 的步（注意力保持 100%）。\n"
              "- **FLOP-model speedup**：该次运行在联合块中节省的计算量，按此模型和图像尺寸折算。它只估算 transformer "
              "部分，不含文本编码器、VAE 和采样器。\n"
              "- **wall**：模型加载之后的采样秒数；第一次模型计算单独给出（其中包含预热和编译）。\n"
              "- **cache ... MiB peak, n blends**：混合缓存的内存以及混入缓存值的次数；设置不用缓存时为 *cache off*。\n"
              "- **state ... MiB peak; kept for continuations ...**：该次运行占用的全部内存（缓存、优先级计数器，以及有 "
              "Merge Map 读取模型时的合并图），以及它在 CPU 上为接续运行保留的部分。\n"
              "- 使用 dpm_fast 或 dpm_adaptive 时，还有一行列出采样器实际计算的步（它自行选择计算点）。"},
    "report.example_title": {"en": "An example", "zh": "示例"},
    "report.example_intro": {
        "en": "The summary of the committed photo-fixture demo run ({steps} steps, preset balanced; "
              "docs/benchmarks/demo_photo_report.json in the repository), as this node shows it:",
        "zh": "仓库中已提交的照片测试模型演示运行（{steps} 步，预设 balanced；仓库中的 "
              "docs/benchmarks/demo_photo_report.json）的摘要，与本节点显示的一致："},
    "report.json": {
        "en": "The JSON output holds the same and more: every step with its phase, ratio and token counts "
              "(`steps`), the phases (`phases`), `flop_speedup`, `wall_seconds`, `cache`, `memory` and `seed`.",
        "zh": "JSON 输出包含同样的内容以及更多：每一步的阶段、比例和 token 数（`steps`）、各阶段（`phases`）、"
              "`flop_speedup`、`wall_seconds`、`cache`、`memory` 和 `seed`。"},

    "map.reading_title": {"en": "Reading the map", "zh": "如何阅读合并图"},
    "map.reading": {
        "en": "- One panel per step, titled with the step, its phase and the share of image tokens the attention "
              "and the MLP computed.\n"
              "- In a **structure** step each tinted 2x2 window became one token for the attention and the MLP "
              "(one colour per window).\n"
              "- In a **detail** step tokens of one colour were merged into one for the MLP; untinted tokens were "
              "computed on their own. Flat areas merge, fine texture is left alone.\n"
              "- **Full** steps merge nothing; they refresh the cache.\n"
              "- The chart below has one bar pair per step: the share of image tokens the attention and the MLP "
              "computed (grey: full, blue: structure, orange: detail).\n"
              "- Each block chooses its merges from its own features: pick one with `block`.\n"
              "- The model keeps the maps only when a Merge Map reads it (they cost memory), which the node sees "
              "in the prompt.",
        "zh": "- 每步一个面板，标题是步号、阶段，以及注意力和 MLP 计算的图像 token 比例。\n"
              "- 在**结构**步中，每个着色的 2x2 窗口对注意力和 MLP 来说变成一个 token（每个窗口一种颜色）。\n"
              "- 在**细节**步中，同一颜色的 token 为 MLP 合并成一个；未着色的 token 单独计算。平坦区域会被合并，细腻的纹理"
              "保持不变。\n"
              "- **完整**步不做合并；它们刷新缓存。\n"
              "- 下方的图表每步一对柱：注意力和 MLP 计算的图像 token 比例（灰色：完整，蓝色：结构，橙色：细节）。\n"
              "- 每个块根据自己的特征选择合并：用 `block` 选择要看的块。\n"
              "- 只有当 Merge Map 读取模型时（节点从提示中看出这一点），模型才保留合并图（它们占用内存）。"},
    "map.example_title": {"en": "An example", "zh": "示例"},
    "map.example": {
        "en": "The photo fixture with the balanced preset ({steps} steps, seed 0, \"a photo of a flower\"), made by "
              "`{command}`, which samples through ComfyUI and calls this node:",
        "zh": "照片测试模型使用 balanced 预设（{steps} 步，种子 0，\"a photo of a flower\"），由 "
              "`{command}` 生成：它通过 ComfyUI 采样并调用本节点："},
}


LOCALES = ("en", "zh")


def section(key: str, locale: str, **fields) -> str:
    """The text of ``key`` in ``locale``, its ``{name}`` fields filled."""
    return SECTIONS[key][locale].format(**fields) if fields else SECTIONS[key][locale]
