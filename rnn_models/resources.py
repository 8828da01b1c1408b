"""How many Train workers each trial gets, with how much CPU and GPU, computed from the cluster.

The rule (README, "Resources"):
- Ray Data keeps `DATA_CPUS` (one whole CPU) free for its read tasks: each read starts with a file
  listing task that needs a whole CPU, and when Train workers hold the rest, ingest starves and the run
  hangs without an error. A trial's driver reserves only `DRIVER_CPUS`; it just waits.
- CPU only: one worker per trial by default (DDP ranks on one machine only split the same cores), the
  remaining CPUs divided evenly so every trial runs at once, each worker at least `MIN_CPUS_PER_WORKER`
  (more processes per core only thrash). Trials that do not fit queue.
- GPUs: with at least one GPU per worker, each worker gets a whole GPU and trials spread over them; with
  fewer GPUs than trials, trials share them by fractional GPUs, one worker per trial (two DDP ranks of
  one run must never share a GPU: NCCL refuses).
"""

import math
from dataclasses import asdict, dataclass

from rnn_models.errors import UserError

DATA_CPUS = 1.0
DRIVER_CPUS = 0.01
MIN_CPUS_PER_WORKER = 0.2
MIN_GPUS_PER_WORKER = 0.1  # at most ten trials share a GPU; more queue


@dataclass(frozen=True)
class Plan:
    workers: int  # Train workers (DDP ranks) per trial
    cpus_per_worker: float
    gpus_per_worker: float
    concurrent_trials: int
    torch_threads: int  # intra-op threads per worker: the CPUs it holds

    def describe(self, n_trials: int) -> str:
        device = f"{self.gpus_per_worker:g} GPU + " if self.gpus_per_worker else ""
        return (f"{n_trials} trial(s), {self.concurrent_trials} at a time; each {self.workers} worker(s) of "
                f"{device}{self.cpus_per_worker:g} CPU, {self.torch_threads} torch thread(s)")

    def as_dict(self) -> dict:
        return asdict(self)


def _floor(x: float, step: float = 0.01) -> float:
    return math.floor(x / step + 1e-9) * step


def plan_resources(n_trials: int, cpus: float, gpus: float, workers: int = 0, use_gpu: str = "auto",
                   cpus_per_gpu: float | None = None) -> Plan:
    """Size `n_trials` trials for a cluster of `cpus` and `gpus`; `workers` = 0 means choose.

    How many trials run at once is decided first; the others queue and reserve nothing meanwhile.
    `cpus_per_gpu` is the CPU:GPU ratio of the GPU nodes (workers get no more CPUs than sit beside their GPU).
    """
    if use_gpu == "yes" and gpus < 1e-9:
        raise UserError("--use-gpu yes, but the Ray cluster has no GPU; use --use-gpu auto or no, or add GPU nodes")
    if use_gpu != "no" and gpus > 0:
        return _gpu_plan(n_trials, cpus, gpus, workers, cpus_per_gpu)
    workers = workers or 1
    smallest_trial = workers * MIN_CPUS_PER_WORKER + DRIVER_CPUS
    fits = math.floor((cpus - DATA_CPUS) / smallest_trial + 1e-9)  # trials that fit at once
    if fits < 1:
        raise UserError(f"--workers-per-trial {workers} needs at least {smallest_trial + DATA_CPUS:g} CPUs, "
                        f"the Ray cluster has {cpus:g}")
    concurrent = min(n_trials, fits)
    cpus_per_worker = _floor(_spare(cpus, concurrent) / (concurrent * workers))
    return Plan(workers, cpus_per_worker, 0.0, concurrent, _threads(cpus_per_worker))


def _spare(cpus: float, concurrent: int) -> float:
    """CPUs left for Train workers: all but Ray Data's whole one (a read's file listing task needs a whole
    CPU) and the drivers' of the trials running at once."""
    return cpus - DATA_CPUS - concurrent * DRIVER_CPUS


def _gpu_plan(n_trials: int, cpus: float, gpus: float, workers: int, cpus_per_gpu: float | None) -> Plan:
    whole_gpus = math.floor(gpus + 1e-9)
    workers = workers or max(1, whole_gpus // n_trials)
    if workers > 1 and workers > whole_gpus:
        raise UserError(f"--workers-per-trial {workers} needs {workers} GPUs (one per DDP rank), "
                        f"the Ray cluster has {gpus:g}")
    if whole_gpus >= n_trials * workers:  # a whole GPU per worker, all trials at once
        gpus_per_worker, concurrent = 1.0, n_trials
    elif workers == 1:  # trials share the GPUs, each at least MIN_GPUS_PER_WORKER; the rest queue
        concurrent = min(n_trials, math.floor(gpus / MIN_GPUS_PER_WORKER + 1e-9))
        gpus_per_worker = _floor(gpus / concurrent)
    else:
        gpus_per_worker, concurrent = 1.0, whole_gpus // workers
    spare = _spare(cpus, concurrent)
    share = min(spare / (concurrent * workers), (cpus_per_gpu or spare / gpus) * gpus_per_worker)
    cpus_per_worker = max(MIN_CPUS_PER_WORKER, _floor(share))
    return Plan(workers, cpus_per_worker, gpus_per_worker, concurrent, _threads(cpus_per_worker))


def _threads(cpus_per_worker: float) -> int:
    """Torch threads: the CPUs a worker holds, rounded, at least one. Not more: on 2 cores a lone trial's
    worker with a second thread beside Ray's own processes trained bilstm 22 % slower (benchmark)."""
    return max(1, round(cpus_per_worker))


def cluster_plan(n_trials: int, workers: int = 0, use_gpu: str = "auto") -> Plan:
    """`plan_resources` for the Ray cluster this process is connected to."""
    import ray

    total = ray.cluster_resources()
    gpu_nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("GPU")]
    cpus_per_gpu = min((r.get("CPU", 0) / r["GPU"] for r in gpu_nodes), default=None)
    return plan_resources(n_trials, total.get("CPU", 0), total.get("GPU", 0), workers, use_gpu, cpus_per_gpu)
