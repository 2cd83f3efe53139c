"""The build's work directory: completion records that make every stage resumable.

A build writes under ``OUT/.work/``:

- ``plan.json``: the sampled units of every model, with the fingerprint of the
  study config, the model specs and the dataset's image list that made them;
- ``scan/``: the disk-backed activation arrays of running scans, with their
  progress checkpoints (deleted once the unit records below are written);
- ``exemplars/<unit>.json``: a unit's chosen exemplars, their activations and ranks;
- ``fv/<unit>.json``: a unit's feature visualisations (the images themselves are
  already in ``OUT/images/``), with the attempt that made them (0, or a retry);
- ``verdicts/<unit>.json``: whether the unit may be shown (:mod:`stimuli.acceptance`), its
  problems, and the reserve unit that took its place when it may not.

Every file is written atomically, so a record that exists is complete. Only
the small JSON records stay after the bundle is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from contracts.bundle import DICTIONARIES, IMAGES, write_json_atomic
from contracts.errors import PsychinterpError
from stimuli.exemplars import BatchSide, UnitExemplars
from stimuli.units import SampledUnit

WORK = ".work"


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclasses.dataclass
class ExemplarRecord:
    unit: SampledUnit
    exemplars: UnitExemplars
    activations: dict[int, float]  # dataset index -> activation, for the chosen images
    separation: float  # (mean top references - mean bottom references) / sd over the dataset
    targets: tuple[float, float]  # the most extreme natural activations: (max, min)
    random_images: tuple[tuple[int, int], ...] = ()  # per batch, (index, rank): odd-one-out's random odd images
    target_images: tuple[int, int] | None = None  # the dataset indices of the targets' images (max, min)

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit.model_dump(mode="json"),
            "max_side": [dataclasses.asdict(s) for s in self.exemplars.max_side],
            "min_side": [dataclasses.asdict(s) for s in self.exemplars.min_side],
            "activations": {str(i): v for i, v in sorted(self.activations.items())},
            "separation": self.separation,
            "targets": list(self.targets),
            **({"random_images": [list(r) for r in self.random_images]} if self.random_images else {}),
            **({"target_images": list(self.target_images)} if self.target_images is not None else {}),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ExemplarRecord:
        def side(d: dict[str, Any]) -> BatchSide:
            return BatchSide(tuple(d["references"]), tuple(d["reference_ranks"]), d["query"], d["query_rank"])

        return cls(
            unit=SampledUnit.model_validate(raw["unit"]),
            exemplars=UnitExemplars(tuple(map(side, raw["max_side"])), tuple(map(side, raw["min_side"]))),
            activations={int(i): v for i, v in raw["activations"].items()},
            separation=raw["separation"],
            targets=tuple(raw["targets"]),
            random_images=tuple(tuple(r) for r in raw.get("random_images", ())),
            # records written before it was kept have none
            target_images=tuple(raw["target_images"]) if "target_images" in raw else None,
        )


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether a unit may be shown; when it may not, its problems and the reserve that took its place
    (None: no reserve was left, and the unit's place stays empty)."""

    unit: SampledUnit
    accepted: bool
    problems: tuple[str, ...] = ()
    replaced_by: SampledUnit | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit.model_dump(mode="json"),
            "accepted": self.accepted,
            "problems": list(self.problems),
            "replaced_by": self.replaced_by.model_dump(mode="json") if self.replaced_by else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Verdict:
        replaced = raw.get("replaced_by")
        return cls(
            unit=SampledUnit.model_validate(raw["unit"]),
            accepted=raw["accepted"],
            problems=tuple(raw.get("problems", ())),
            replaced_by=SampledUnit.model_validate(replaced) if replaced else None,
        )


class WorkDir:
    def __init__(self, out: Path):
        self.out = out
        self.root = out / WORK

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    def scan_path(self, model_id: str, unit_ids: Iterable[str]) -> Path:
        key = fingerprint(sorted(unit_ids))[:16]
        return self.root / "scan" / f"{model_id}-{key}.npy"

    def exemplar_path(self, unit_id: str) -> Path:
        return self.root / "exemplars" / f"{unit_id}.json"

    def fv_path(self, unit_id: str) -> Path:
        return self.root / "fv" / f"{unit_id}.json"

    def verdict_path(self, unit_id: str) -> Path:
        return self.root / "verdicts" / f"{unit_id}.json"

    def read_plan(self, expected_fingerprint: str) -> dict[str, Any] | None:
        """The stored plan; an error when it was made by another config, models or dataset."""
        if not self.plan_path.exists():
            return None
        plan = json.loads(self.plan_path.read_text())
        if plan.get("fingerprint") != expected_fingerprint:
            raise PsychinterpError(
                f"{self.root}: holds the partial work of a build with a different study config, model specs "
                f"or dataset; delete {self.root} to start over, or build into another --out"
            )
        return plan

    def write_plan(self, plan: dict[str, Any]) -> None:
        write_json_atomic(self.plan_path, plan)

    def write_exemplars(self, record: ExemplarRecord) -> None:
        write_json_atomic(self.exemplar_path(record.unit.unit_id), record.to_json())

    def read_exemplars(self, unit_id: str) -> ExemplarRecord | None:
        path = self.exemplar_path(unit_id)
        return ExemplarRecord.from_json(json.loads(path.read_text())) if path.exists() else None

    def write_fv(self, unit_id: str, images: list[dict[str, Any]], method: dict[str, Any], attempt: int = 0) -> None:
        """A unit's visualisations, with the method (name and settings) that made them and the attempt (0, or
        the retry) that made these."""
        write_json_atomic(
            self.fv_path(unit_id), {"unit_id": unit_id, "method": method, "attempt": attempt, "images": images}
        )

    def read_fv_record(self, unit_id: str, same_method: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The unit's visualisation record (method, attempt, images); an error when ``same_method`` says another
        method or setting made them."""
        path = self.fv_path(unit_id)
        if not path.exists():
            return None
        stored = json.loads(path.read_text())
        if not same_method(stored.get("method")):
            raise PsychinterpError(
                f"{path}: made by feature visualisation {stored.get('method')}, not the study config's; "
                "build into a new --out folder"
            )
        return stored

    def read_fv(self, unit_id: str, same_method: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]] | None:
        """The unit's visualisations (see :meth:`read_fv_record`)."""
        stored = self.read_fv_record(unit_id, same_method)
        return None if stored is None else stored["images"]

    def write_verdict(self, verdict: Verdict) -> None:
        write_json_atomic(self.verdict_path(verdict.unit.unit_id), verdict.to_json())

    def read_verdict(self, unit_id: str) -> Verdict | None:
        path = self.verdict_path(unit_id)
        return Verdict.from_json(json.loads(path.read_text())) if path.exists() else None

    def adopt_plan(self, other: WorkDir) -> None:
        """Take another output folder's plan and the dictionaries it names."""
        self._copy_files(other, DICTIONARIES, "*.safetensors")
        write_json_atomic(self.plan_path, json.loads(other.plan_path.read_text()))

    def _copy_files(self, other: WorkDir, folder: str, pattern: str) -> None:
        for src in sorted((other.out / folder).glob(pattern)):
            dst = self.out / folder / src.name
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(f".{dst.name}.tmp")
                shutil.copyfile(src, tmp)
                tmp.replace(dst)

    def absorb(self, other: WorkDir) -> int:
        """Copy another shard directory's unit records and images here; returns the records copied."""
        copied = 0
        for sub in ("exemplars", "fv", "verdicts"):
            for src in sorted((other.root / sub).glob("*.json")):
                dst = self.root / sub / src.name
                if not dst.exists():
                    write_json_atomic(dst, json.loads(src.read_text()))
                    copied += 1
        self._copy_files(other, IMAGES, "*.png")
        return copied
