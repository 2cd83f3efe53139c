"""Import task folders in the on-disk format of the 2023 study (brendel-group/imi) into a bundle.

A task folder holds ``index.json`` (``task_name``, ``n_reference_images``, ``n_trials``, and
optionally ``catch_trial_idxs``) and ``trials/trial_<k>/{queries,references}/``. This reads the
folders the way the study's own page does (``mturk/2afc/task.js``, ``getTaskStructure``):

- trials ``trial_1`` ... ``trial_<n_trials>``, in that order; other trial folders are ignored;
- for n = ``n_reference_images`` (a string in some folders of the release, an integer in others),
  the references ``max_8, max_7, ..., max_(9-n)`` and ``min_8, ..., min_(9-n)``, the first of each
  shown first; other indices are ignored;
- the queries ``queries/max.png`` (the correct answer) and ``queries/min.png``.

Some released folders still use the numbering of that page's earlier version (kept there in a
comment: ``max_i`` and ``min_(i+1)``, so ``min_1 ... min_9`` and no ``min_0``). Where a listed file
is missing, the import says which, and uses that numbering when it is complete; otherwise it stops.

When a folder holds both the tasks of a namespace (``<ns>/task_<k>``) and its practice folder
(``demo_<ns>``), as the page expects, the practice folder's trials become the bundle's practice
trials; a practice folder imported on its own becomes a task, so it can be served.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from contracts import bundle as bundle_schema
from contracts.bundle import Answer, AnswerKey, Bundle, BundleModel, Manifest, References, Task, Trial, Unit
from contracts.errors import PsychinterpError
from contracts.paradigms import TWO_AFC
from stimuli.images import png_bytes

_TRIAL = re.compile(r"^trial_(\d+)$")
_HIGHEST_REFERENCE = 8  # task.js counts down from max_8 / min_8


class ImiFormatError(PsychinterpError):
    pass


@dataclass
class ImiImport:
    bundle: Bundle
    notes: list[str] = field(default_factory=list)  # what was missing or ignored, and what was used instead


@dataclass(frozen=True)
class TaskFolder:
    path: Path
    task_name: str
    n_references: int
    n_trials: int
    catch_trials: frozenset[int]

    @property
    def namespace(self) -> str:
        """``resnet50_natural`` for ``.../resnet50_natural/task_3``; the folder's own name otherwise."""
        return self.path.parent.name if re.match(r"^task_\d+$", self.path.name) else self.path.name


def reference_names(n: int, side: str, legacy: bool = False) -> list[str]:
    """The files task.js shows for ``n`` references, in its order (``legacy``: its earlier numbering)."""
    offset = 1 if legacy and side == "min" else 0
    return [f"{side}_{i + offset}.png" for i in range(_HIGHEST_REFERENCE, _HIGHEST_REFERENCE - n, -1)]


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def find_task_folders(root: Path) -> list[Path]:
    """``root`` itself when it is a task folder, else the task folders one or two levels below it."""
    if (root / "index.json").is_file():
        return [root]
    found = sorted(
        (p.parent for pattern in ("*/index.json", "*/*/index.json") for p in root.glob(pattern))
        if root.is_dir()
        else [],
        key=_natural_key,
    )
    if not found:
        raise ImiFormatError(f"{root}: no index.json here or in any subfolder; not a 2023-format task folder")
    return found


def read_task_folder(folder: Path) -> TaskFolder:
    path = folder / "index.json"
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ImiFormatError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(index, dict):
        raise ImiFormatError(f"{path}: expected a JSON object")

    def whole(key: str, value) -> int:
        try:
            number = int(value)  # a string in some folders, an integer in others
        except (TypeError, ValueError):
            raise ImiFormatError(f"{path}: {key} = {value!r} is not a whole number") from None
        if number < 1:
            raise ImiFormatError(f"{path}: {key} = {value!r} must be at least 1")
        return number

    for key in ("n_reference_images", "n_trials"):
        if key not in index:
            raise ImiFormatError(f"{path}: no {key}; the study's page needs it")
    n_refs = whole("n_reference_images", index["n_reference_images"])
    if n_refs > _HIGHEST_REFERENCE + 1:
        raise ImiFormatError(f"{path}: n_reference_images = {n_refs}; the study's page shows at most 9")
    catch = index.get("catch_trial_idxs", [])
    if not isinstance(catch, list):
        raise ImiFormatError(f"{path}: catch_trial_idxs = {catch!r} is not a list")
    return TaskFolder(
        path=folder,
        task_name=str(index.get("task_name") or folder.name),
        n_references=n_refs,
        n_trials=whole("n_trials", index["n_trials"]),
        catch_trials=frozenset(whole("catch_trial_idxs", k) for k in catch),
    )


def _image_sha(out: Path, path: Path) -> str:
    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise ImiFormatError(f"{path}: not a readable image ({exc})") from None
    return bundle_schema.write_image_bytes(out, png_bytes(pixels))


def _condition(task: TaskFolder, condition: str | None) -> str:
    name = f"{task.namespace}/{task.task_name}".lower()
    said = "natural" if "natural" in name else "synthetic" if ("optimized" in name or "synthetic" in name) else None
    if said or condition:  # the name wins: --condition is for folders whose names say nothing
        return said or condition
    raise ImiFormatError(f"{task.path}: cannot tell the condition from its name; pass --condition")


def _references(task: TaskFolder, ref_dir: Path, notes: list[str]) -> dict[str, list[Path]]:
    """The reference files the study's page shows, per side; where some are missing, the earlier numbering."""
    chosen = {}
    for side in ("max", "min"):
        expected = [ref_dir / name for name in reference_names(task.n_references, side)]
        missing = [p.name for p in expected if not p.is_file()]
        if not missing:
            chosen[side] = expected
            continue
        legacy = [ref_dir / name for name in reference_names(task.n_references, side, legacy=True)]
        if all(p.is_file() for p in legacy):
            notes.append(
                f"{ref_dir}: {', '.join(missing)} missing (the study's page would show a broken image); "
                f"used {legacy[0].name} ... {legacy[-1].name}, the numbering of the page's earlier version"
            )
            chosen[side] = legacy
            continue
        raise ImiFormatError(
            f"{ref_dir}: {', '.join(missing)} missing; the study's page shows "
            f"{expected[0].name} ... {expected[-1].name} for n_reference_images = {task.n_references}"
        )
    return chosen


def _trials(task: TaskFolder, out: Path, source: Path, condition: str, rng, notes: list[str], kind: str):
    """Trials, units and answers of one task folder."""
    trials_dir = task.path / "trials"
    present = (
        {int(m.group(1)) for p in trials_dir.iterdir() if (m := _TRIAL.match(p.name))} if trials_dir.is_dir() else set()
    )
    wanted = range(1, task.n_trials + 1)
    missing = [k for k in wanted if k not in present]
    if missing:
        raise ImiFormatError(
            f"{trials_dir}: no trial_{missing[0]} folder, but index.json says n_trials = {task.n_trials}"
        )
    if extra := sorted(present - set(wanted)):
        notes.append(
            f"{trials_dir}: trial_{extra[0]} and {len(extra) - 1} more beyond n_trials ignored, as the page does"
        )
    trials, units, answers = [], [], {}
    for k in wanted:
        trial_dir = trials_dir / f"trial_{k}"
        queries = {}
        for side in ("max", "min"):
            path = trial_dir / "queries" / f"{side}.png"
            if not path.is_file():
                raise ImiFormatError(f"{path}: missing query image")
            queries[side] = _image_sha(out, path)
        refs = {
            side: [_image_sha(out, p) for p in paths]
            for side, paths in _references(task, trial_dir / "references", notes).items()
        }
        trial_kind = kind
        if k in task.catch_trials:
            if {queries["max"], queries["min"]} <= {*refs["max"], *refs["min"]}:
                trial_kind = "catch"
            else:
                notes.append(
                    f"{trial_dir}: listed in catch_trial_idxs, but its queries are not among the references "
                    "the page shows; imported as a main trial"
                )
        trial_id = f"{task.task_name}__trial_{k}"
        unit_id = re.sub(r"[^A-Za-z0-9_.-]", "-", trial_id)
        # The page's own paradigm; the page shuffles the queries in the browser, the import draws an order.
        order = TWO_AFC.query_order(int(rng.integers(TWO_AFC.n_orders)))
        roles = [TWO_AFC.query_roles[i] for i in order]
        units.append(unit_id)
        trials.append(
            Trial(
                trial_id=trial_id,
                unit_id=unit_id,
                condition=condition,
                kind=trial_kind,
                max_side="right",
                references=References(min=refs["min"], max=refs["max"]),
                queries=[queries[role] for role in roles],
            )
        )
        answers[trial_id] = Answer(
            max_query=TWO_AFC.answer_position(order),
            query_sources=[(trial_dir / "queries" / f"{role}.png").relative_to(source).as_posix() for role in roles],
        )
    return trials, units, answers


def import_imi_tasks(
    source: Path,
    out: Path,
    study_id: str,
    model_id: str = "imported",
    condition: str | None = None,
    seed: int = 0,
) -> ImiImport:
    """Write a bundle holding every task under ``source`` (``condition``: for folders whose names say none).

    Max references are shown on the right, as in the 2023 study; the order of the two queries
    is shuffled (seeded): the original page shuffles them in the browser.
    """
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    folders = [read_task_folder(p) for p in find_task_folders(source)]
    namespaces = {f.namespace for f in folders if not f.namespace.startswith("demo_")}
    practice = [f for f in folders if f.namespace.startswith("demo_") and f.namespace[5:] in namespaces]
    tasks: list[Task] = []
    units: list[str] = []
    answers: dict[str, Answer] = {}
    practice_trials: list[Trial] = []
    conditions: list[str] = []
    for task in folders:
        task_condition = _condition(task, condition)
        is_practice = task in practice
        trials, task_units, task_answers = _trials(
            task, out, source, task_condition, rng, notes, "practice" if is_practice else "main"
        )
        units += task_units
        answers |= task_answers
        if is_practice:
            practice_trials += trials
        else:
            tasks.append(Task(task_id=task.task_name, condition=task_condition, model_id=model_id, trials=trials))
        if task_condition not in conditions:
            conditions.append(task_condition)
    manifest = Manifest(
        schema_version=bundle_schema.SCHEMA_VERSION,
        study_id=study_id,
        paradigm=TWO_AFC.name,
        title=f"imported from {source.name}",
        models=[BundleModel(id=model_id, display_name=model_id, source="imported")],
        units=[Unit(unit_id=u, model_id=model_id) for u in units],
        conditions=conditions,
        tasks=tasks,
        practice_trials=practice_trials,
    )
    key = AnswerKey(schema_version=bundle_schema.SCHEMA_VERSION, study_id=study_id, answers=answers)
    return ImiImport(bundle=bundle_schema.write_bundle(out, manifest, key), notes=notes)
