"""Import task folders in the on-disk format of the 2023 study (brendel-group/imi) into a bundle.

A task folder holds ``index.json`` and ``trials/trial_<k>/{queries,references}/``. The format
varies across that release: ``n_reference_images`` is a string or an integer, trials are numbered
from 1, and reference indices are not always contiguous from 0. So this reads what is there, and
checks it, rather than assuming.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stimuli import bundle as bundle_schema
from stimuli.bundle import Answer, AnswerKey, Bundle, BundleModel, Manifest, References, Task, Trial, Unit
from stimuli.errors import PsychinterpError
from stimuli.images import png_bytes

_REFERENCE = re.compile(r"^(max|min)_(\d+)\.png$")
_TRIAL = re.compile(r"^trial_(\d+)$")


class ImiFormatError(PsychinterpError):
    pass


def find_task_folders(root: Path) -> list[Path]:
    """``root`` itself when it is a task folder, else its task subfolders (sorted naturally)."""
    if (root / "index.json").is_file():
        return [root]
    found = (
        sorted(
            (p for p in root.iterdir() if (p / "index.json").is_file()),
            key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)],
        )
        if root.is_dir()
        else []
    )
    if not found:
        raise ImiFormatError(f"{root}: no index.json here or in any subfolder; not a 2023-format task folder")
    return found


def _read_index(folder: Path) -> tuple[str, int | None, int | None]:
    path = folder / "index.json"
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ImiFormatError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(index, dict):
        raise ImiFormatError(f"{path}: expected a JSON object")

    def as_int(key: str) -> int | None:
        value = index.get(key)
        if value is None:
            return None
        try:
            return int(value)  # a string in some folders, an integer in others
        except (TypeError, ValueError):
            raise ImiFormatError(f"{path}: {key} = {value!r} is not a whole number") from None

    return str(index.get("task_name") or folder.name), as_int("n_reference_images"), as_int("n_trials")


def _image_sha(out: Path, path: Path) -> str:
    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise ImiFormatError(f"{path}: not a readable image ({exc})") from None
    return bundle_schema.write_image_bytes(out, png_bytes(pixels))


def _condition(task_name: str, condition: str | None) -> str:
    if condition:
        return condition
    name = task_name.lower()
    if "natural" in name:
        return "natural"
    if "optimized" in name or "synthetic" in name:
        return "synthetic"
    raise ImiFormatError(f"task {task_name!r}: cannot tell the condition from its name; pass --condition")


def import_imi_tasks(
    source: Path,
    out: Path,
    study_id: str,
    model_id: str = "imported",
    condition: str | None = None,
    seed: int = 0,
) -> Bundle:
    """Write a bundle holding every task under ``source``.

    Max references are shown on the right, as in the 2023 study; the order of the two
    queries is shuffled (seeded), since the original shows them by file name.
    """
    rng = np.random.default_rng(seed)
    tasks: list[Task] = []
    units: list[Unit] = []
    answers: dict[str, Answer] = {}
    conditions: list[str] = []
    for folder in find_task_folders(source):
        task_name, n_refs, n_trials = _read_index(folder)
        task_condition = _condition(task_name, condition)
        trial_dirs = sorted(
            (p for p in (folder / "trials").iterdir() if _TRIAL.match(p.name)) if (folder / "trials").is_dir() else [],
            key=lambda p: int(_TRIAL.match(p.name).group(1)),
        )
        if not trial_dirs:
            raise ImiFormatError(f"{folder / 'trials'}: no trial_<k> folders")
        if n_trials is not None and n_trials != len(trial_dirs):
            raise ImiFormatError(
                f"{folder / 'index.json'}: n_trials is {n_trials} but {len(trial_dirs)} trial folders exist"
            )
        trials = []
        for trial_dir in trial_dirs:
            trial_id = f"{task_name}__{trial_dir.name}"
            refs: dict[str, list[tuple[int, Path]]] = {"max": [], "min": []}
            ref_dir = trial_dir / "references"
            for path in sorted(ref_dir.iterdir()) if ref_dir.is_dir() else []:
                if match := _REFERENCE.match(path.name):
                    refs[match.group(1)].append((int(match.group(2)), path))
            counts = {side: len(found) for side, found in refs.items()}
            if counts["max"] != counts["min"] or (n_refs is not None and counts["max"] != n_refs):
                raise ImiFormatError(
                    f"{ref_dir}: found {counts['max']} max and {counts['min']} min references"
                    + (f"; index.json says {n_refs}" if n_refs is not None else "")
                )
            queries = {}
            for side in ("max", "min"):
                path = trial_dir / "queries" / f"{side}.png"
                if not path.is_file():
                    raise ImiFormatError(f"{path}: missing query image")
                queries[side] = _image_sha(out, path)
            # In the 2023 release a higher index is a more extreme reference; the bundle lists the most extreme first.
            ordered = {
                side: [_image_sha(out, p) for _, p in sorted(found, reverse=True)] for side, found in refs.items()
            }
            unit_id = re.sub(r"[^A-Za-z0-9_.-]", "-", trial_id)
            max_first = bool(rng.integers(2))
            units.append(Unit(unit_id=unit_id, model_id=model_id))
            trials.append(
                Trial(
                    trial_id=trial_id,
                    unit_id=unit_id,
                    condition=task_condition,
                    max_side="right",
                    references=References(min=ordered["min"], max=ordered["max"]),
                    queries=(queries["max"], queries["min"]) if max_first else (queries["min"], queries["max"]),
                )
            )
            sources = tuple(
                (trial_dir / "queries" / f"{side}.png").relative_to(source).as_posix() for side in ("max", "min")
            )
            answers[trial_id] = Answer(
                max_query=0 if max_first else 1, query_sources=sources if max_first else sources[::-1]
            )
        tasks.append(Task(task_id=task_name, condition=task_condition, model_id=model_id, trials=trials))
        if task_condition not in conditions:
            conditions.append(task_condition)
    manifest = Manifest(
        schema_version=1,
        study_id=study_id,
        title=f"imported from {source.name}",
        models=[BundleModel(id=model_id, display_name=model_id, source="imported")],
        units=units,
        conditions=conditions,
        tasks=tasks,
    )
    return bundle_schema.write_bundle(out, manifest, AnswerKey(schema_version=1, study_id=study_id, answers=answers))
