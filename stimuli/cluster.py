"""Run a build's shards as jobs through ``submitit``: on SLURM, or as local processes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from contracts.bundle import Bundle
from contracts.errors import PsychinterpError
from stimuli.build import PrecisionChoice, Shard, build_study, merge_shards, plan_units
from stimuli.exemplars import ImageTreeDataset
from stimuli.study import StudyConfig
from stimuli.workdir import WORK

log = logging.getLogger(__name__)

Executor = Literal["local", "slurm"]


@dataclass(frozen=True)
class JobResources:
    timeout_min: int = 24 * 60
    cpus_per_task: int = 8
    gpus_per_node: int = 0
    mem_gb: int = 32
    slurm_partition: str | None = None


def _run_shard(
    config: StudyConfig,
    out: Path,
    shard: Shard,
    device: str,
    weights: Mapping[str, Path],
    precision: PrecisionChoice,
) -> str:
    # Runs inside the job: set up logging there, as the job starts a fresh interpreter.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_study(config, out, device=device, weights=weights, shard=shard, precision=precision)
    return str(shard)


def build_with_jobs(
    config: StudyConfig,
    out: Path,
    jobs: int,
    executor: Executor = "local",
    resources: JobResources = JobResources(),
    device: str = "cpu",
    weights: Mapping[str, Path] | None = None,
    precision: PrecisionChoice = "auto",
) -> Bundle:
    """Submit one job per shard, wait for all, then merge.

    A failed job raises with its log; finished shards keep their records, so
    submitting again redoes only what is missing.
    """
    import submitit

    weights = dict(weights or {})
    out.mkdir(parents=True, exist_ok=True)
    # Plan once here, so that the jobs read one plan instead of racing to write it.
    plan_units(config, out, ImageTreeDataset(config.dataset.path), device, weights)
    pool = submitit.AutoExecutor(folder=out / WORK / "jobs" / "%j", cluster=executor)
    pool.update_parameters(
        name=f"psychinterp-{config.study_id}",
        timeout_min=resources.timeout_min,
        cpus_per_task=resources.cpus_per_task,
        gpus_per_node=resources.gpus_per_node,
        mem_gb=resources.mem_gb,
        **({"slurm_partition": resources.slurm_partition} if resources.slurm_partition else {}),
    )
    shards = [Shard(i + 1, jobs) for i in range(jobs)]
    submitted = pool.map_array(
        _run_shard,
        [config] * jobs,
        [out] * jobs,
        shards,
        [device] * jobs,
        [weights] * jobs,
        [precision] * jobs,
    )
    log.info("submitted %d job(s): %s", len(submitted), ", ".join(j.job_id for j in submitted))
    failures = []
    for job, shard in zip(submitted, shards, strict=True):
        try:
            job.result()
        except Exception as exc:  # submitit wraps the job's own error with its log
            failures.append(f"shard {shard} (job {job.job_id}): {exc}")
    if failures:
        raise PsychinterpError(
            f"{len(failures)} of {jobs} build job(s) failed; rerun to redo only their work:\n" + "\n".join(failures)
        )
    return merge_shards(config, out)
