"""Caption files, image file names and the determinism of evaluation sampling (per-image noise, fixed
batches, sharding by rank), for commands/evaluate.py. See docs/EVALUATION.md."""
from __future__ import annotations

import csv
import hashlib
import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path

SETTINGS_FILE = "evaluate_settings.json"  # what a sample folder was made with; checked when resuming
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CAPTION_FILE_KINDS = "a JSON list of {image_id, caption}, a COCO captions JSON or a PartiPrompts .tsv"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Caption files
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    image_id: int | str
    caption: str
    name: str  # file name stem of its image


def image_stem(image_id: int | str) -> str:
    """File name stem of an image: integer ids (and strings of digits) zero-padded to 12 digits, as
    COCO names its files; other string ids as they are (letters, digits, '.', '_', '-')."""
    if isinstance(image_id, bool):
        raise TypeError(f"image_id must be an integer or a string, got {image_id!r}")
    if isinstance(image_id, int) or (isinstance(image_id, str) and image_id.isdigit() and image_id.isascii()):
        number = int(image_id)
        if number < 0:
            raise ValueError(f"image_id must not be negative, got {image_id!r}")
        return f"{number:012d}"
    if isinstance(image_id, str) and SAFE_NAME.match(image_id) and image_id not in (".", ".."):
        return image_id
    raise ValueError(f"image_id must be a non-negative integer or a string of letters, digits, '.', '_', '-' "
                     f"(it names the image file), got {image_id!r}")


def _prompts_from_pairs(pairs: list[tuple[object, object]], where: str) -> list[Prompt]:
    prompts, seen = [], {}
    for index, (image_id, caption) in enumerate(pairs):
        if not isinstance(caption, str) or not caption.strip():
            raise UsageError(f"{where}: entry {index} (image_id {image_id!r}) has no caption text")
        try:
            stem = image_stem(image_id)
        except (TypeError, ValueError) as error:
            raise UsageError(f"{where}: entry {index}: {error}") from None
        if stem in seen:
            raise UsageError(f"{where}: entries {seen[stem]} and {index} both have image_id {image_id!r}")
        seen[stem] = index
        prompts.append(Prompt(image_id, caption.strip(), stem))
    if not prompts:
        raise UsageError(f"{where}: no captions in the file")
    return prompts


def _coco_longest_captions(data: dict, where: str) -> list[tuple[object, object]]:
    """Raw COCO captions_*.json: the longest caption of each image (ties: the lowest annotation id),
    ordered by image_id."""
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise UsageError(f"{where}: a COCO captions file needs an 'annotations' list")
    best: dict = {}
    for index, item in enumerate(annotations):
        if (not isinstance(item, dict) or not isinstance(item.get("image_id"), int)
                or not isinstance(item.get("caption"), str)):
            raise UsageError(f"{where}: annotation {index} needs an integer 'image_id' and a 'caption' string")
        caption, order = item["caption"].strip(), item.get("id", index)
        current = best.get(item["image_id"])
        if current is None or (len(caption), -order) > (len(current[0]), -current[1]):
            best[item["image_id"]] = (caption, order)
    return [(image_id, best[image_id][0]) for image_id in sorted(best)]


def _partiprompts(path: Path, where: str) -> list[tuple[object, object]]:
    """PartiPrompts TSV (columns Prompt, Category, Challenge, Note): image_id = row index from 0."""
    with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: a leading BOM is no part of the header
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))  # prompts keep their quotes
    if not rows or "Prompt" not in rows[0]:
        raise UsageError(f"{where}: a PartiPrompts TSV needs a header row with a 'Prompt' column")
    column = rows[0].index("Prompt")
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    for number, row in enumerate(body):
        if len(row) <= column:
            raise UsageError(f"{where}: data row {number} has no 'Prompt' column")
    return [(index, row[column]) for index, row in enumerate(body)]


def _check_caption_file(path: Path, where: str) -> None:
    """Say what is wrong with a caption path that is no readable caption file: missing, a directory, not a
    regular file (a device such as /dev/null, a pipe), or empty."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"{where}: no such file") from None
    except OSError as error:
        raise UsageError(f"{where}: cannot read it ({error.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{where}: is a directory, not a caption file ({CAPTION_FILE_KINDS})")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{where}: is not a regular file (a caption file is {CAPTION_FILE_KINDS})")
    if info.st_size == 0:
        raise UsageError(f"{where}: is empty (a caption file is {CAPTION_FILE_KINDS})")


def load_captions(path: str | Path) -> list[Prompt]:
    """Read a caption file: a JSON list of {"image_id", "caption"} (file order), a raw COCO
    captions_*.json (the longest caption per image, by image_id), or a PartiPrompts .tsv (row order,
    image_id = row index). Raises UsageError naming the file and the problem."""
    path = Path(path)
    where = f"--caption-path {path}"
    _check_caption_file(path, where)
    try:
        if path.suffix.lower() == ".tsv":
            return _prompts_from_pairs(_partiprompts(path, where), where)
        with path.open(encoding="utf-8-sig") as handle:  # a leading BOM (as some editors write) is ignored
            data = json.load(handle)
    except UnicodeDecodeError as error:
        raise UsageError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{where}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except OSError as error:
        raise UsageError(f"{where}: cannot read it ({error.strerror})") from None
    if isinstance(data, dict):
        return _prompts_from_pairs(_coco_longest_captions(data, where), where)
    if isinstance(data, list):
        pairs = []
        for index, item in enumerate(data):
            if not isinstance(item, dict) or "image_id" not in item or "caption" not in item:
                raise UsageError(f"{where}: entry {index} must be an object with 'image_id' and 'caption'")
            pairs.append((item["image_id"], item["caption"]))
        return _prompts_from_pairs(pairs, where)
    raise UsageError(f"{where}: expected a JSON list of {{image_id, caption}} objects, a COCO captions file "
                     f"or a PartiPrompts .tsv, got JSON {type(data).__name__}")


# ---------------------------------------------------------------------------------------------
# Determinism: per-image noise, fixed batches, sharding
# ---------------------------------------------------------------------------------------------
def derived_seed(seed: int, key: str) -> int:
    """A 63-bit seed that depends only on (seed, key)."""
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_noise(seed: int, stem: str, latent_shape: tuple[int, ...]):
    """The starting noise of one image [1, *latent_shape], float32 on the CPU (as ComfyUI makes it)."""
    import torch
    generator = torch.Generator(device="cpu").manual_seed(derived_seed(seed, "image/" + stem))
    return torch.randn((1, *latent_shape), generator=generator, dtype=torch.float32, device="cpu")


def make_batches(prompts: list[Prompt], batch_size: int) -> list[list[Prompt]]:
    """The global batch list: consecutive prompts in file order."""
    return [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]


def shard(batches: list, rank: int, world_size: int) -> list:
    """The batches of one rank: batch i goes to rank i % world_size."""
    return batches[rank::world_size]


def image_files(folder: Path) -> dict[str, Path]:
    """The images of a folder by file name stem (hidden files left out)."""
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}

