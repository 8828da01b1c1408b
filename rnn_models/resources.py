"""How many workers each trial gets, with how much CPU and GPU, computed from the cluster.

The rule (docs/training.md, "Resources"):
- Ray Data keeps `DATA_CPUS` (one CPU, over the whole cluster) free for its tasks; when Train workers hold
  the rest, ingest starves and the run hangs without an error. Its read tasks ask for `READ_CPUS` each, and
  the workers are sized so that, however Ray places them, some node keeps that much free: one CPU left
  over the cluster may be half a CPU on each of two nodes, where a task of one whole CPU never runs.
- A trial of one worker is that worker (it holds the worker's resources). A trial driving a Train worker group
  reserves no CPU (it just waits) but a sliver of the head node (`DRIVER_RESOURCES`): such trials, and the
  Train controllers Ray puts beside them, must not live on preemptible worker nodes.
- No worker asks for more CPUs than the largest node has.
- CPU only: one worker per trial by default (DDP ranks on one machine only split the same cores), the
  remaining CPUs divided evenly so every trial runs at once, each worker at least `MIN_CPUS_PER_WORKER`
  (more processes per core only thrash). Trials that do not fit queue.
- GPUs: with at least one GPU per worker, each worker gets a whole GPU and trials spread over them; with
  fewer GPUs than trials, trials share them by fractional GPUs, one worker per trial (two DDP ranks of
  one run must never share a GPU: NCCL refuses). GPU workers leave `NODE_RESERVED_CPUS` of each GPU
  node to Ray (Data tasks) beside them.
"""

import math
from dataclasses import asdict, dataclass

from rnn_models.errors import UserError

DATA_CPUS = 1.0
READ_CPUS = 0.25  # per Ray Data read task: reading a shard of a few MB is light
DRIVER_RESOURCES = {"CPU": 0, "node:__internal_head__": 0.01}  # on the head (100 trials fit), no CPU
NODE_RESERVED_CPUS = 1.0
MIN_CPUS_PER_WORKER = 0.25  # four trials at once on 2 CPUs beside Ray Data; more would thrash
MIN_GPUS_PER_WORKER = 0.1  # at most ten trials share a GPU; more queue


@dataclass(frozen=True)
class Plan:
    workers: (
        int  # workers (DDP ranks) per trial: one trains in its trial's process, more in a Train worker group
    )
    cpus_per_worker: float
    gpus_per_worker: float
    concurrent_trials: int
    torch_threads: int  # intra-op threads per worker: the CPUs it holds

    def describe(self, n_trials: int) -> str:
        device = f"{self.gpus_per_worker:g} GPU + " if self.gpus_per_worker else ""
        return (
            f"{n_trials} trial(s), {self.concurrent_trials} at a time; each {self.workers} worker(s) of "
            f"{device}{self.cpus_per_worker:g} CPU, {self.torch_threads} torch thread(s)"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _floor(x: float, step: float = 0.01) -> float:
    return round(math.floor(x / step + 1e-9) * step, 6)  # 0.95, not 0.9500000000000001


def plan_resources(
    n_trials: int,
    cpus: float,
    gpus: float,
    workers: int = 0,
    use_gpu: str = "auto",
    cpus_per_gpu: float | None = None,
    node_cpus: tuple[float, ...] = (),
) -> Plan:
    """Size `n_trials` trials for a cluster of `cpus` and `gpus`; `workers` = 0 means choose.

    How many trials run at once is decided first; the others queue and reserve nothing meanwhile.
    `cpus_per_gpu` is the CPUs a GPU node leaves its workers per GPU (workers get no more CPUs than sit
    beside their GPU); `node_cpus`, each node's CPUs (default: one node of `cpus`), cap any worker's CPUs
    and keep room for a read task on some node.
    """
    if use_gpu == "yes" and gpus < 1e-9:
        raise UserError(
            "--use-gpu yes, but the Ray cluster has no GPU; use --use-gpu auto or no, or add GPU nodes"
        )
    if use_gpu != "no" and gpus > 0:
        return _gpu_plan(n_trials, cpus, gpus, workers, cpus_per_gpu)
    workers = workers or 1
    smallest_trial = workers * MIN_CPUS_PER_WORKER
    fits = math.floor((cpus - DATA_CPUS) / smallest_trial + 1e-9)  # trials that fit at once, beside Ray Data
    if fits < 1:
        raise UserError(
            f"--workers-per-trial {workers} needs at least {smallest_trial + DATA_CPUS:g} CPUs, "
            f"the Ray cluster has {cpus:g}"
        )
    concurrent = min(n_trials, fits)
    node_cpus = node_cpus or (cpus,)
    cpus_per_worker = _floor(min((cpus - DATA_CPUS) / (concurrent * workers), max(node_cpus)))
    while cpus_per_worker > MIN_CPUS_PER_WORKER and not _fits(
        cpus_per_worker, concurrent * workers, node_cpus
    ):
        cpus_per_worker = _floor(cpus_per_worker - 0.01)
    return Plan(workers, cpus_per_worker, 0.0, concurrent, _threads(cpus_per_worker))


def _fits(cpus_per_worker: float, workers: int, node_cpus: tuple[float, ...]) -> bool:
    """Whether `workers` workers fit on the nodes at once and, however Ray places them, some node keeps READ_CPUS
    free: one with a worker's room left over (more rooms than workers), or one the workers cannot fill."""
    rooms = [math.floor(c / cpus_per_worker + 1e-9) for c in node_cpus]
    if sum(rooms) != workers:
        return sum(rooms) > workers and cpus_per_worker >= READ_CPUS
    return any(c - n * cpus_per_worker >= READ_CPUS - 1e-9 for c, n in zip(node_cpus, rooms))


def _gpu_plan(n_trials: int, cpus: float, gpus: float, workers: int, cpus_per_gpu: float | None) -> Plan:
    whole_gpus = math.floor(gpus + 1e-9)
    workers = workers or max(1, whole_gpus // n_trials)
    if workers > 1 and workers > whole_gpus:
        raise UserError(
            f"--workers-per-trial {workers} needs {workers} GPUs (one per DDP rank), "
            f"the Ray cluster has {gpus:g}"
        )
    if whole_gpus >= n_trials * workers:  # a whole GPU per worker, all trials at once
        gpus_per_worker, concurrent = 1.0, n_trials
    elif workers == 1:  # trials share the GPUs, each at least MIN_GPUS_PER_WORKER; the rest queue
        concurrent = min(n_trials, math.floor(gpus / MIN_GPUS_PER_WORKER + 1e-9))
        # a share must fit on one GPU: 4 trials on 3 GPUs get 0.5 each (all run), not 0.75 (three fit)
        sharing = math.ceil(concurrent / whole_gpus) if whole_gpus else None
        gpus_per_worker = _floor(1 / sharing) if sharing else _floor(gpus / concurrent)
    else:
        gpus_per_worker, concurrent = 1.0, whole_gpus // workers
    spare = cpus - DATA_CPUS
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
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus_per_gpu = min(
        (
            max(MIN_CPUS_PER_WORKER, r.get("CPU", 0) - NODE_RESERVED_CPUS) / r["GPU"]
            for r in nodes
            if r.get("GPU")
        ),
        default=None,
    )
    node_cpus = tuple(r["CPU"] for r in nodes if r.get("CPU"))
    return plan_resources(
        n_trials, total.get("CPU", 0), total.get("GPU", 0), workers, use_gpu, cpus_per_gpu, node_cpus
    )
