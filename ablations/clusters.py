"""Cluster profiles: where and how ablation jobs are submitted through submitit.

A profile is a small JSON file in ``slurm/clusters/<name>.json`` (see slurm/README.md). It is loaded
strictly (unknown keys are an error) into :class:`ClusterProfile`, and
:func:`executor_parameters` turns it into the keyword dict for
``submitit.AutoExecutor(folder, cluster="slurm").update_parameters(**params)``.

    >>> profile = load_profile("local")
    >>> params = executor_parameters(profile, job_name="dmz-ablation")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PROFILE_DIR",
    "ClusterProfile",
    "executor_parameters",
    "list_profiles",
    "load_profile",
    "make_executor",
]

#: Directory of the bundled profiles (override with env DMZ_CLUSTER_PROFILES).
PROFILE_DIR = Path(__file__).resolve().parent.parent / "slurm" / "clusters"

# sbatch options that have a first-class profile field; additional_parameters must not set them.
_FIRST_CLASS_SBATCH = {
    "partition", "account", "qos", "nodes", "gpus-per-node", "gpus", "gres", "ntasks-per-node",
    "cpus-per-task", "mem", "time", "constraint", "array", "signal", "job-name",
}


@dataclass(frozen=True)
class ClusterProfile:
    """One submission target. Sizes are per job (one array task).

    gpus_per_node: GPUs requested on each node (0 for CPU-only clusters).
    tasks_per_node: processes per node; ``None`` means one task per requested GPU (DDP through
        submitit's per-task launch), and 1 without GPUs.
    cpus_per_task: CPU cores per task (data-loader workers + 1 is a good start).
    mem_gb: memory per node for a job that uses all ``gpus_per_node`` GPUs (see executor_parameters
        for jobs asking fewer GPUs); ``None`` leaves --mem out (site default).
    timeout_min: wall-clock limit; submitit sends USR2 ``signal_delay_s`` seconds before it to
        checkpoint and requeue.
    array_parallelism: at most this many tasks of one job array run at once (``--array=...%N``).
    setup: shell lines run in the sbatch script before the job (e.g. ``module load cuda``).
    additional_parameters: any other sbatch option, ``{"requeue": true, "exclusive": true}``.
    """

    name: str
    partition: str | None
    timeout_min: int
    description: str = ""
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int = 1
    mem_gb: float | None = None
    constraint: str | None = None
    array_parallelism: int = 256
    signal_delay_s: int = 90
    setup: tuple[str, ...] = ()
    additional_parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"cluster profile {self.name!r}"

        def check_int(key: str, minimum: int, optional: bool = False) -> None:
            value = getattr(self, key)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")

        def check_str(key: str) -> None:
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{where}: {key} must be a non-empty string or null, got {value!r}")

        for key in ("partition", "account", "qos", "constraint"):
            check_str(key)
        if not isinstance(self.description, str):
            raise ValueError(f"{where}: description must be a string")
        check_int("timeout_min", 1)
        check_int("nodes", 1)
        check_int("gpus_per_node", 0)
        check_int("tasks_per_node", 1, optional=True)
        check_int("cpus_per_task", 1)
        check_int("array_parallelism", 1)
        check_int("signal_delay_s", 0)
        if self.mem_gb is not None and (
            isinstance(self.mem_gb, bool) or not isinstance(self.mem_gb, (int, float)) or self.mem_gb <= 0
        ):
            raise ValueError(f"{where}: mem_gb must be a positive number or null, got {self.mem_gb!r}")
        if self.signal_delay_s >= self.timeout_min * 60:
            raise ValueError(
                f"{where}: signal_delay_s ({self.signal_delay_s}) must be shorter than the time limit "
                f"({self.timeout_min} min)"
            )
        if not isinstance(self.setup, (list, tuple)) or not all(isinstance(s, str) for s in self.setup):
            raise ValueError(f"{where}: setup must be a list of shell lines")
        object.__setattr__(self, "setup", tuple(self.setup))
        if not isinstance(self.additional_parameters, dict) or not all(
            isinstance(k, str) for k in self.additional_parameters
        ):
            raise ValueError(f"{where}: additional_parameters must be an object of sbatch options")
        clash = sorted(
            k for k in self.additional_parameters if k.replace("_", "-").lstrip("-") in _FIRST_CLASS_SBATCH
        )
        if clash:
            raise ValueError(
                f"{where}: additional_parameters {clash} duplicate first-class profile fields; "
                "set those fields instead"
            )

    def to_dict(self) -> dict[str, Any]:
        """The profile as a JSON-able dict (the inverse of load_profile, minus the name)."""
        out = dataclasses.asdict(self)
        out.pop("name")
        out["setup"] = list(self.setup)
        return out


_FIELD_NAMES = {f.name for f in dataclasses.fields(ClusterProfile)}


def _profile_dir() -> Path:
    return Path(os.environ.get("DMZ_CLUSTER_PROFILES", PROFILE_DIR))


def list_profiles() -> list[str]:
    """Names of the profiles in the profile directory, sorted."""
    directory = _profile_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.json"))


def _from_dict(name: str, data: Any, source: str) -> ClusterProfile:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a cluster profile must be a JSON object")
    unknown = sorted(set(data) - (_FIELD_NAMES - {"name"}))
    if unknown:
        allowed = ", ".join(sorted(_FIELD_NAMES - {"name"}))
        raise ValueError(f"{source}: unknown cluster profile key(s) {unknown}; allowed keys: {allowed}")
    missing = sorted(k for k in ("partition", "timeout_min") if k not in data)
    if missing:
        raise ValueError(f"{source}: missing required cluster profile key(s) {missing}")
    return ClusterProfile(name=name, **data)


def load_profile(name_or_path: str | os.PathLike[str] | ClusterProfile) -> ClusterProfile:
    """Load a profile by name (``"local"``) or from a JSON file path.

    A value that ends in ``.json`` or contains a path separator is read as a path; anything else
    is looked up in the profile directory. Unknown names raise ValueError listing the available
    profiles; unknown JSON keys raise ValueError naming them.
    """
    if isinstance(name_or_path, ClusterProfile):
        return name_or_path
    text = os.fspath(name_or_path)
    if text.endswith(".json") or os.sep in text or (os.altsep and os.altsep in text):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"cluster profile file not found: {path}")
        name = path.stem
    else:
        path = _profile_dir() / f"{text}.json"
        name = text
        if not path.is_file():
            available = ", ".join(list_profiles()) or "(none)"
            raise ValueError(f"unknown cluster profile {text!r}; available profiles: {available}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from exc
    return _from_dict(name, data, str(path))


def executor_parameters(
    profile: ClusterProfile | str, *, job_name: str, gpus: int | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``submitit.AutoExecutor.update_parameters`` (cluster="slurm").

    ``gpus`` overrides the profile's GPUs per node for this job (``0 <= gpus <= gpus_per_node``).
    With ``tasks_per_node`` null in the profile, the job gets one task per GPU (DDP). A job that
    asks for fewer GPUs than the profile's node gets the proportional share of ``mem_gb``
    (rounded up to whole GB; a CPU-only job on a GPU profile gets one GPU's share).
    """
    profile = load_profile(profile)
    if not isinstance(job_name, str) or not job_name:
        raise ValueError("job_name must be a non-empty string")
    if gpus is None:
        gpus = profile.gpus_per_node
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ValueError(f"gpus must be a non-negative integer, got {gpus!r}")
    if gpus > profile.gpus_per_node:
        raise ValueError(
            f"cluster profile {profile.name!r} has {profile.gpus_per_node} GPU(s) per node; "
            f"cannot request {gpus}"
        )
    tasks = profile.tasks_per_node if profile.tasks_per_node is not None else max(1, gpus)
    mem_gb = profile.mem_gb
    if mem_gb is not None and profile.gpus_per_node and gpus < profile.gpus_per_node:
        mem_gb = float(math.ceil(mem_gb * max(gpus, 1) / profile.gpus_per_node))

    params: dict[str, Any] = {
        "name": job_name,
        "timeout_min": profile.timeout_min,
        "nodes": profile.nodes,
        "tasks_per_node": tasks,
        "cpus_per_task": profile.cpus_per_task,
        "slurm_array_parallelism": profile.array_parallelism,
        "slurm_signal_delay_s": profile.signal_delay_s,
    }
    if gpus:
        # Left out for 0: clusters without GRES reject --gpus-per-node=0.
        params["gpus_per_node"] = gpus
    if mem_gb is not None:
        params["mem_gb"] = int(mem_gb) if float(mem_gb).is_integer() else mem_gb
    optional = {
        "slurm_partition": profile.partition,
        "slurm_account": profile.account,
        "slurm_qos": profile.qos,
        "slurm_constraint": profile.constraint,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    if profile.setup:
        params["slurm_setup"] = list(profile.setup)
    if profile.additional_parameters:
        params["slurm_additional_parameters"] = dict(profile.additional_parameters)
    return params


def make_executor(
    profile: ClusterProfile | str, folder: str | os.PathLike[str], *, job_name: str, gpus: int | None = None
):
    """A ``submitit.AutoExecutor(folder, cluster="slurm")`` configured from the profile."""
    import submitit  # imported lazily: loading profiles must not need submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**executor_parameters(profile, job_name=job_name, gpus=gpus))
    return executor
