"""One source of truth for every option: typed dataclasses shared by the CLI, the jobs, Tune and the tests.

Each field's `help` metadata is the CLI's help text; `__post_init__` validates, raising a `UserError`
that names the command-line option, so a bad value fails the same way from every entry point.
"""

import math
from dataclasses import dataclass, field, fields

from rnn_models.errors import UserError

ARCHS = ("mlp", "lstm", "bilstm", "handrolled_bilstm")
DEFAULT_SOURCE = "hf:stanfordnlp/imdb"


def opt(default, help: str, **kwargs):
    """A dataclass field that carries its command-line help text."""
    return field(default=default, metadata={"help": help, **kwargs})


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


class OptionError(UserError):
    """A bad value of one option. `key` and `problem` let a file name the value by its key path instead."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{option_name(key)} {problem}")
        self.key, self.problem = key, problem


def require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise OptionError(name, message)


SEEDS = 2**32  # numpy's RandomState (Tune's sampler) takes seeds in [0, 2**32)


def require_seed(seed: int) -> None:
    require(0 <= seed < SEEDS, "seed", f"must be in [0, {SEEDS - 1}] (got {seed})")


def require_finite(config) -> None:
    """Every float option finite: `--lr inf` or a JSON NaN would pass the range checks and ruin a run."""
    for f in fields(config):
        value = getattr(config, f.name)
        require(
            not isinstance(value, float) or math.isfinite(value),
            f.name,
            f"must be a finite number (got {value})",
        )


@dataclass(frozen=True)
class PrepareConfig:
    """How raw IMDB reviews become tokenized parquet shards (`rnn-models prepare`)."""

    source: str = opt(
        DEFAULT_SOURCE,
        "hf:<dataset>, a Hugging Face parquet directory, aclImdb directory or .tar.gz, or a CSV",
    )
    out: str = opt(
        "data/prepared",
        "output directory or URI (s3://..., gs://...) for shards, vocab.json and manifest.json",
    )
    vocab_size: int = opt(
        1024, "the K most frequent train tokens get ids 2..K+1 (0 = padding, 1 = out-of-vocabulary)"
    )
    max_len: int = opt(
        64, "ids kept per review: longer reviews are truncated, shorter ones padded with 0 at the end"
    )
    val_size: int = opt(2000, "reviews held out of train for validation (stratified, seeded)")
    test_size: float = opt(0.5, "share of a CSV without a split column that becomes the test split")
    seed: int = opt(0, "seed for every random choice (validation hold-out, sampling, shard order)")
    max_reviews_per_split: int | None = opt(
        None, "keep a stratified sample of N reviews per source split (quick runs)"
    )
    strip_br: bool = opt(
        False,
        "replace the HTML line break '<br />' with a space before normalising (else it yields the token 'br')",
    )
    num_shards: int = opt(8, "parquet files per split (at most), so Ray Data reads in parallel")

    def __post_init__(self):
        require_finite(self)
        require(self.vocab_size >= 1, "vocab_size", f"must be at least 1 (got {self.vocab_size})")
        require(self.max_len >= 1, "max_len", f"must be at least 1 (got {self.max_len})")
        require(self.val_size >= 1, "val_size", f"must be at least 1 (got {self.val_size})")
        require(0 < self.test_size < 1, "test_size", f"must be between 0 and 1 (got {self.test_size})")
        require_seed(self.seed)
        require(self.num_shards >= 1, "num_shards", f"must be at least 1 (got {self.num_shards})")
        if self.max_reviews_per_split is not None:
            require(
                self.max_reviews_per_split >= 2,
                "max_reviews_per_split",
                f"must be at least 2 (got {self.max_reviews_per_split})",
            )


@dataclass(frozen=True)
class BaselineConfig:
    """Linear baselines on the same tokens and splits (`rnn-models baseline`): uni+bigram logistic regression."""

    source: str = opt(DEFAULT_SOURCE, "the reviews, as `prepare --source` takes them")
    out: str = opt("runs/baseline", "folder for baseline.json, baseline.md and test_predictions.parquet")
    dev_size: int = opt(5000, "reviews held out of train to choose the regularisation (stratified, seeded)")
    seed: int = opt(
        0, "seed of the dev hold-out (prepare's --seed: the same split as `prepare --val-size DEV_SIZE`)"
    )
    strip_br: bool = opt(True, "replace '<br />' with a space before normalising, as the tuned presets do")
    max_reviews_per_split: int | None = opt(
        None, "keep a stratified sample of N reviews per source split (quick runs)"
    )

    def __post_init__(self):
        require(self.dev_size >= 2, "dev_size", f"must be at least 2 (got {self.dev_size})")
        require_seed(self.seed)
        if self.max_reviews_per_split is not None:
            require(
                self.max_reviews_per_split >= 4,
                "max_reviews_per_split",
                f"must be at least 4 (got {self.max_reviews_per_split})",
            )


MODEL_CHOICES = {
    "readout": ("last", "pool", "pool_with_inputs"),
    "pooling": ("flatten", "mean"),
    "embedding_dropout": ("element", "spatial", "none"),
    "init": ("pytorch", "axon"),
    "head_activation": ("relu", "leaky_relu"),
    "lstm_bias": ("two", "one"),
    "initial_state": ("zeros", "axon"),
}


@dataclass(frozen=True)
class ModelConfig:
    """One architecture and its sizes (`models.model_from_config`); the defaults are the notebook's."""

    arch: str = opt("lstm", "architecture: " + ", ".join(ARCHS))
    embedding_size: int = opt(64, "embedding width")
    hidden_size: int = opt(64, "LSTM state size and width of the dense layer before the output")
    num_layers: int = opt(1, "stacked LSTM layers (recurrent archs)")
    dropout: float = opt(0.0, "dropout on embeddings, between LSTM layers and before the output layer")
    merge: str = opt(
        "sum", "handrolled_bilstm: combine the two directions by 'sum' (the notebook) or 'concat'"
    )
    seed_faithful: bool = opt(
        False,
        "handrolled_bilstm: the notebook's unmasked reading (whole padded row reversed, "
        "read at the last padded step)",
    )
    readout: str = opt(
        "last",
        "recurrent archs: 'last' (the state after each review's last real token), 'pool' "
        "(max and mean of the outputs over every real step) or 'pool_with_inputs' (also of the step "
        "inputs: a bag of the tokens and bigrams beside the LSTMs)",
    )
    pooling: str = opt(
        "flatten",
        "mlp: 'flatten' (the notebook: every position's embedding) or 'mean' (a bag of "
        "tokens, and of hashed bigrams with --bigram-buckets, averaged: fastText-style)",
    )
    bigram_buckets: int = opt(
        0,
        "embedding rows for hashed bigrams (pairs of neighbouring tokens), for the mlp with "
        "--pooling mean and the recurrent archs (added to each step's input); 0 = tokens only",
    )
    embedding_dropout: str = opt(
        "element",
        "how --dropout drops embeddings: 'element' (single values), 'spatial' "
        "(whole embedding channels across a review) or 'none'",
    )
    token_dropout: float = opt(
        0.0,
        "recurrent archs: share of real tokens replaced by the out-of-vocabulary id "
        "while training (word dropout: no single word can carry a review)",
    )
    init: str = opt(
        "pytorch",
        "initial weights: 'pytorch' (its defaults) or 'axon' (the notebook's: embeddings "
        "uniform in ±0.01, glorot-uniform kernels, zero biases)",
    )
    forget_bias: float = opt(0.0, "recurrent archs: added to the LSTMs' forget-gate bias at initialisation")
    lstm_bias: str = opt(
        "two",
        "recurrent archs: 'two' bias vectors per LSTM gate (PyTorch's, both trained) or 'one' (Axon's: the "
        "hidden-to-hidden bias held at zero)",
    )
    initial_state: str = opt(
        "zeros",
        "recurrent archs: the LSTMs' initial state: 'zeros' (PyTorch) or 'axon' (glorot-uniform, drawn afresh "
        "at every training step, the same draw for the cell and the output; zero for scoring)",
    )
    head_activation: str = opt(
        "relu",
        "the dense layer's activation before the output: 'relu' (the notebook) or 'leaky_relu' (slope "
        "0.01: a unit that is off on every review still learns)",
    )

    def __post_init__(self):
        require_finite(self)
        require(self.arch in ARCHS, "arch", f"must be one of {', '.join(ARCHS)} (got {self.arch!r})")
        require(self.embedding_size >= 1, "embedding_size", f"must be at least 1 (got {self.embedding_size})")
        require(self.hidden_size >= 1, "hidden_size", f"must be at least 1 (got {self.hidden_size})")
        require(self.num_layers >= 1, "num_layers", f"must be at least 1 (got {self.num_layers})")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1) (got {self.dropout})")
        require(0 <= self.token_dropout < 1, "token_dropout", f"must be in [0, 1) (got {self.token_dropout})")
        require(self.merge in ("sum", "concat"), "merge", f"must be 'sum' or 'concat' (got {self.merge!r})")
        for name, choices in MODEL_CHOICES.items():
            value = getattr(self, name)
            require(value in choices, name, f"must be one of {', '.join(choices)} (got {value!r})")
        require(self.forget_bias >= 0, "forget_bias", f"must be 0 or more (got {self.forget_bias})")
        require(self.bigram_buckets >= 0, "bigram_buckets", f"must be 0 or more (got {self.bigram_buckets})")
        require(
            self.bigram_buckets == 0 or self.arch != "mlp" or self.pooling == "mean",
            "bigram_buckets",
            "needs --pooling mean (a flattened MLP has no bag to add bigrams to)",
        )


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; the defaults are the notebook's (Adam 1e-4, batch 64, 10 epochs)."""

    epochs: int = opt(10, "passes over the train split")
    batch_size: int = opt(64, "reviews per step on each worker; the global batch is batch-size x workers")
    lr: float = opt(1e-4, "Adam learning rate")
    weight_decay: float = opt(0.0, "decoupled weight decay (AdamW); 0 is plain Adam, the notebook")
    lr_schedule: str = opt(
        "constant", "'constant' (the notebook) or 'cosine' (linear warm-up, then decay to 0)"
    )
    warmup: float = opt(1.0, "cosine schedule: epochs of linear warm-up (fractions allowed)")
    grad_clip: float = opt(0.0, "clip the gradient norm to this value; 0 = no clipping")
    adversarial: float = opt(
        0.0,
        "adversarial training: each step also trains on every review's embeddings moved by "
        "this fraction of their norm the way that raises its loss most (training/adversarial.py); "
        "a second forward and backward pass per step; 0 = off",
    )
    table_grads: str = opt(
        "rows",
        "with several workers, how their embedding tables' gradients are added up: 'rows' sends only "
        "the rows a step touched (training/table_rows.py), 'dense' the whole tables (DDP's own "
        "all-reduce, cheaper past ~32 workers); the same gradients either way",
    )
    patience: int = opt(0, "stop after this many epochs without a better val accuracy; 0 = train every epoch")
    seed: int = opt(0, "seed for initial weights and shuffling (with --source, for the data's splits too)")
    shuffle_buffer: int = opt(
        32768,
        "reviews shuffled together on each worker, in a new order every epoch (the "
        "default holds a worker's whole share of IMDB: a full shuffle); 0 = none: every epoch reads the "
        "prepared order, which prepare shuffled once (the notebook)",
    )
    bucket_batches: int = opt(
        0,
        "sort each run of this many batches by review length and cut each batch at its "
        "longest review, so a batch costs its reviews' real length; 0 = no bucketing",
    )
    test_checkpoint: str = opt(
        "best",
        "which checkpoint the test split scores: 'best' (val accuracy) or 'last' "
        "(the notebook: the weights after the last epoch)",
    )

    def __post_init__(self):
        require_finite(self)
        require(self.epochs >= 1, "epochs", f"must be at least 1 (got {self.epochs})")
        require(self.batch_size >= 1, "batch_size", f"must be at least 1 (got {self.batch_size})")
        require(self.lr > 0, "lr", f"must be positive (got {self.lr})")
        require(self.weight_decay >= 0, "weight_decay", f"must be 0 or more (got {self.weight_decay})")
        require(
            self.lr_schedule in ("constant", "cosine"),
            "lr_schedule",
            f"must be 'constant' or 'cosine' (got {self.lr_schedule!r})",
        )
        require(self.warmup >= 0, "warmup", f"must be 0 or more epochs (got {self.warmup})")
        require(self.bucket_batches >= 0, "bucket_batches", f"must be 0 or more (got {self.bucket_batches})")
        require(
            self.test_checkpoint in ("best", "last"),
            "test_checkpoint",
            f"must be 'best' or 'last' (got {self.test_checkpoint!r})",
        )
        require(
            self.table_grads in ("rows", "dense"),
            "table_grads",
            f"must be 'rows' or 'dense' (got {self.table_grads!r})",
        )
        require(self.adversarial >= 0, "adversarial", f"must be 0 or more (got {self.adversarial})")
        require(self.grad_clip >= 0, "grad_clip", f"must be 0 or more (got {self.grad_clip})")
        require(self.patience >= 0, "patience", f"must be 0 or more (got {self.patience})")
        require_seed(self.seed)
        require(self.shuffle_buffer >= 0, "shuffle_buffer", f"must be 0 or more (got {self.shuffle_buffer})")


@dataclass(frozen=True)
class RunConfig:
    """Where and how a training run executes: data, architectures, cluster resources, storage."""

    data: str = opt("data/prepared", "prepared data: a directory or a URI (from `rnn-models prepare`)")
    archs: str = opt(",".join(ARCHS), "comma-separated architectures, one Tune trial each")
    workers_per_trial: int = opt(0, "Ray Train workers (DDP ranks) per trial; 0 = sized from the cluster")
    use_gpu: str = opt("auto", "'auto' (use GPUs if the cluster has any), 'yes' or 'no'")
    storage: str = opt(
        "runs",
        "where runs are kept: a local path, or on a multi-node cluster a URI every node "
        "reaches (s3://..., gs://..., or file:///path for a folder every node mounts)",
    )
    name: str = opt("", "run name, a folder under --storage; default: train-<date>-<time>")
    max_failures: int = opt(3, "restarts allowed per trial, each from its last checkpoint")
    torch_threads: int = opt(0, "intra-op torch threads per worker; 0 = sized from the CPUs it holds")
    gpu_wait: int = opt(900, "seconds --use-gpu auto|yes waits for an autoscaling cluster to add a GPU node")
    schedule_timeout: int = opt(
        120,
        "seconds a task, actor or worker group may wait for resources that no node "
        "frees before the run stops with an error naming them (0 = wait forever)",
    )
    worker_wait: int = opt(
        1800,
        "seconds a task, actor or worker group may wait for nodes an autoscaler launches "
        "but does not bring up (spot capacity gone, a quota) before the run stops with an error "
        "naming the node types (0 = wait forever)",
    )
    verify: bool = opt(
        False,
        "check every prepared file's SHA-256 before training (reads all of --data); "
        "without it, their names and sizes",
    )
    seeds: str = opt(
        "",
        "comma-separated training seeds: each architecture trained once per seed, as parallel "
        "trials, and reported per seed and as mean ± sd (the data's splits stay --seed's)",
    )

    def __post_init__(self):
        unknown = [a for a in self.arch_list if a not in ARCHS]
        require(
            bool(self.arch_list) and not unknown,
            "archs",
            f"names unknown architecture(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(ARCHS)}",
        )
        require(
            len(set(self.arch_list)) == len(self.arch_list),
            "archs",
            f"repeats an architecture ({self.archs})",
        )
        require(
            self.workers_per_trial >= 0,
            "workers_per_trial",
            f"must be 0 (auto) or more (got {self.workers_per_trial})",
        )
        require(
            self.use_gpu in ("auto", "yes", "no"),
            "use_gpu",
            f"must be auto, yes or no (got {self.use_gpu!r})",
        )
        require(self.max_failures >= 0, "max_failures", f"must be 0 or more (got {self.max_failures})")
        require(
            self.torch_threads >= 0, "torch_threads", f"must be 0 (auto) or more (got {self.torch_threads})"
        )
        require(self.gpu_wait >= 0, "gpu_wait", f"must be 0 or more seconds (got {self.gpu_wait})")
        require(
            self.schedule_timeout >= 0,
            "schedule_timeout",
            f"must be 0 or more seconds (got {self.schedule_timeout})",
        )
        require(self.worker_wait >= 0, "worker_wait", f"must be 0 or more seconds (got {self.worker_wait})")
        require(
            "/" not in self.name and self.name not in (".", ".."),
            "name",
            f"must be a plain folder name (got {self.name!r})",
        )
        seeds = self._seed_items()
        require(
            all(s.isdigit() and int(s) < SEEDS for s in seeds),
            "seeds",
            f"must be comma-separated integers in [0, {SEEDS - 1}] (got {self.seeds!r})",
        )
        require(len(set(self.seed_list)) == len(seeds), "seeds", f"repeats a seed ({self.seeds})")

    @property
    def arch_list(self) -> list[str]:
        return [a.strip() for a in self.archs.split(",") if a.strip()]

    @property
    def seed_list(self) -> list[int]:
        """The seeds of --seeds; [] without it (one trial per architecture, --seed's)."""
        return [int(s) for s in self._seed_items()]

    def _seed_items(self) -> list[str]:
        return [s.strip() for s in self.seeds.split(",") if s.strip()]


@dataclass(frozen=True)
class SearchConfig:
    """`rnn-models tune`: which configurations to try and how to stop the weak ones early."""

    search_space: str = opt("builtin", "'builtin' or a JSON file of distributions per option")
    num_samples: int = opt(8, "configurations tried per architecture")
    scheduler: str = opt(
        "asha", "'asha' (stop weak trials early on val accuracy) or 'fifo' (run all to the end)"
    )
    out: str = opt("", "preset file for the best configurations; default: <storage>/<name>/best-preset.json")

    def __post_init__(self):
        require(self.num_samples >= 1, "num_samples", f"must be at least 1 (got {self.num_samples})")
        require(
            self.scheduler in ("asha", "fifo"), "scheduler", f"must be asha or fifo (got {self.scheduler!r})"
        )
