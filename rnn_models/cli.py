"""`rnn-models` command line: each subcommand's options are generated from the config dataclasses.

`train` and `tune` start from a preset (`--preset`, see `presets.py`); an option given on the command line
overrides the preset's value, so their options default to "not given" rather than to a value.
"""

import argparse
import dataclasses
import itertools
import logging
import sys
import types

from rnn_models import config as C
from rnn_models.data.prepared import SPLITS
from rnn_models.errors import UserError
from rnn_models.presets import PREPARE_KEYS
from rnn_models.storage import absolute, is_uri

ADDRESS_HELP = (
    "Ray cluster to join, or auto for the one `ray start` runs here "
    "(default: $RAY_ADDRESS; else start a local one)"
)
VERBOSE_HELP = "also show Ray's own logs: its processes' output, Tune's status table, Ray Data's progress"


def add_options(
    parser: argparse.ArgumentParser, cls, skip=(), only=None, preset_defaults: bool = False
) -> None:
    """One `--option` per field of dataclass `cls`, with its type, default and help text.

    With `preset_defaults`, an option left out is absent from the parsed arguments (the preset decides).
    """
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        kind = f.type
        if isinstance(kind, types.UnionType):  # `int | None`
            kind = next(t for t in kind.__args__ if t is not type(None))
        default = (
            f" (default: the preset's, else {f.default})" if preset_defaults else f" (default: {f.default})"
        )
        kwargs = {
            "dest": f.name,
            "default": argparse.SUPPRESS if preset_defaults else f.default,
            "help": (f.metadata.get("help", "") + (default if f.default != "" else "")).replace("%", "%%"),
        }
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
        parser.add_argument(C.option_name(f.name), **kwargs)


def given(args: argparse.Namespace, cls, skip=()) -> dict:
    """The options of dataclass `cls` that were given (or have a default) in `args`."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if hasattr(args, f.name) and f.name not in skip
    }


def config_from(args: argparse.Namespace, cls, **overrides):
    """An instance of dataclass `cls` from the parsed options (validated by its `__post_init__`)."""
    return cls(**{**given(args, cls), **overrides})


def _prepare(args) -> None:
    from rnn_models.data.prepare import prepare

    prepare(
        config_from(args, C.PrepareConfig, out=absolute(args.out, "--out")),
        force=args.force,
        address=args.address,
        schedule_timeout=C.RunConfig(schedule_timeout=args.schedule_timeout).schedule_timeout,
    )  # checked there


def _baseline(args) -> None:
    from rnn_models.baselines import report, run_baselines

    out = absolute(args.out, "--out")
    if is_uri(out):
        raise UserError(f"--out {out}: the baseline writes to a folder on this machine, not a URI")
    print(report(run_baselines(config_from(args, C.BaselineConfig, out=out))))


def _summary(args) -> None:
    from rnn_models.models import model_from_config
    from rnn_models.models.summary import summarize

    for arch in args.arch.split(","):
        cfg = config_from(args, C.ModelConfig, arch=arch)
        print(f"== {arch} ==")
        print(summarize(model_from_config(cfg, args.vocab_size, args.max_len), args.max_len))


def _run_setup(args):
    """The run config and the recipe (preset and options), all checked; the data prepared if --source was given."""
    from rnn_models.data.prepare import default_data_dir
    from rnn_models.presets import Recipe, load_preset

    preset = load_preset(args.preset)
    recipe = Recipe(preset, {**given(args, C.ModelConfig), **given(args, C.TrainConfig)})
    prepare_values = {**preset.prepare, **given(args, C.PrepareConfig, skip=("source", "out"))}  # --seed too
    C.PrepareConfig(**prepare_values)  # checked even when --data makes them unused
    run = config_from(
        args,
        C.RunConfig,
        data=absolute(args.data or default_data_dir(prepare_values), "--data"),
        storage=absolute(args.storage, "--storage"),
    )
    for arch in run.arch_list:
        recipe.resolve(arch)  # a bad value fails here, before any data or cluster work
    if args.source:
        from rnn_models.data.prepare import prepare

        prepare(
            C.PrepareConfig(source=args.source, out=run.data, **prepare_values),
            address=args.address,
            schedule_timeout=run.schedule_timeout,
        )
    return run, recipe


def _train(args) -> None:
    from rnn_models.tuning.train import train

    run, recipe = _run_setup(args)
    train(run, recipe, resume=args.resume, address=args.address)


def _tune(args) -> None:
    from rnn_models.tuning.search import search
    from rnn_models.tuning.space import load_search_space

    cfg = config_from(args, C.SearchConfig, out=absolute(args.out, "--out") if args.out else "")
    load_search_space(cfg.search_space)  # a bad space fails before any data or cluster work
    if args.seeds:
        raise UserError(
            "--seeds is for train; a search draws its configurations (and trains them) with --seed"
        )
    run, recipe = _run_setup(args)
    search(run, recipe, cfg, resume=args.resume, address=args.address)


def _evaluate(args) -> None:
    from rnn_models.cluster import connect
    from rnn_models.data.prepared import open_prepared
    from rnn_models.training.checkpoint import open_checkpoint
    from rnn_models.training.evaluation import score_checkpoint
    from rnn_models.training.ingest import DataSpec

    loaded = open_checkpoint(args.checkpoint)
    data = open_prepared(absolute(args.data, "--data"))
    connect(args.address)
    spec = DataSpec.from_prepared(data).load(splits=(args.split,))
    result = score_checkpoint(loaded, spec, args.split)
    print(
        f"{loaded.model_config.arch} epoch {loaded.meta['epoch']}: {args.split} accuracy {result.accuracy:.4f}, "
        f"loss {result.mean_loss:.4f} over {result.count} reviews"
    )


def _predict(args) -> None:
    from rnn_models.predict import Predictor, batches, review_batches

    if not args.texts and not args.file:
        raise UserError("predict: give review texts as arguments or --file FILE")
    reviews = itertools.chain(batches(args.texts), review_batches(args.file) if args.file else [])
    predictor = Predictor.load(args.checkpoint)
    count, unknown = 0, []  # reviews scored; numbers of those without a single known token
    for batch in reviews:
        for text, probability, known in zip(batch, *predictor.score(batch)):
            count += 1
            unknown += [] if known else [count]
            preview = " ".join(text.split())
            print(f"{probability:.4f}\t{preview[:100] + ('…' if len(preview) > 100 else '')}")
    if not count:
        raise UserError(f"--file {args.file}: no reviews in it")
    if unknown:
        numbers = ", ".join(map(str, unknown[:10])) + (", …" if len(unknown) > 10 else "")
        print(
            f"warning: {len(unknown)} review(s) had no token of the checkpoint's vocabulary (review {numbers}); "
            "their scores are the model's answer to an empty review",
            file=sys.stderr,
        )


def _compare(args) -> None:
    from rnn_models.compare import compare

    print(compare(args.runs, args.out))


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What `train` and `tune` share: preset, run, model and training options, data preparation."""
    p.add_argument(
        "--preset",
        default="seed",
        help="a built-in preset (seed, seed-fixed, tuned, frontier) or a "
        "preset file (default: seed, the notebook's recipe)",
    )
    add_options(p, C.RunConfig, skip=("data",))
    p.add_argument(
        "--data",
        help="prepared data directory (default: data/prepared-k<vocab>-t<max len>…, from "
        "the preset's tokenisation)",
    )
    add_options(p, C.TrainConfig, preset_defaults=True)
    add_options(p, C.ModelConfig, skip=("arch",), preset_defaults=True)
    p.add_argument("--source", help="prepare this source into --data first (cached); see `prepare --help`")
    add_options(p, C.PrepareConfig, only=PREPARE_KEYS, preset_defaults=True)
    add_options(p, C.PrepareConfig, only=("max_reviews_per_split",))
    p.add_argument("--resume", action="store_true", help="continue the run --name where it stopped")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option is a `UserError`: one paragraph like every other, not the whole usage."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rnn-models", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for user errors")
    commands = parser.add_subparsers(dest="command", required=True)
    _data_commands(commands)
    _run_commands(commands)
    _checkpoint_commands(commands)
    return parser


def _data_commands(commands) -> None:
    p = commands.add_parser("prepare", help="tokenize IMDB reviews into parquet shards")
    add_options(p, C.PrepareConfig)
    p.add_argument("--force", action="store_true", help="rebuild even if --out already holds this data")
    add_options(p, C.RunConfig, only=("schedule_timeout",))
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(run=_prepare)

    p = commands.add_parser(
        "baseline", help="linear baselines (uni+bigram logistic regression) on the same tokens"
    )
    add_options(p, C.BaselineConfig)
    p.set_defaults(run=_baseline)

    p = commands.add_parser("summary", help="print the layers, shapes and parameters of architectures")
    add_options(p, C.ModelConfig, skip=("arch",))
    p.add_argument("--arch", default=",".join(C.ARCHS), help="comma-separated architectures (default: all)")
    add_options(p, C.PrepareConfig, only=("vocab_size", "max_len"))
    p.set_defaults(run=_summary)


def _run_commands(commands) -> None:
    p = commands.add_parser(
        "train", help="train architectures as parallel Ray Tune trials and report test accuracy"
    )
    _add_run_options(p)
    p.set_defaults(run=_train)

    p = commands.add_parser(
        "tune", help="search hyperparameters per architecture (Ray Tune, ASHA); writes a preset"
    )
    _add_run_options(p)
    add_options(p, C.SearchConfig)
    p.set_defaults(run=_tune)

    p = commands.add_parser("compare", help="one table and plot from several runs (e.g. one per preset)")
    p.add_argument("runs", nargs="+", help="run folders holding results.json (paths or URIs)")
    p.add_argument(
        "--out", required=True, help="folder for comparison.md, comparison.json and comparison.png"
    )
    p.set_defaults(run=_compare)


def _checkpoint_commands(commands) -> None:
    p = commands.add_parser("evaluate", help="accuracy of a checkpoint on a prepared split")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or URI (see results.json)")
    p.add_argument("--data", required=True, help="prepared data directory made with the same vocabulary")
    p.add_argument("--split", default="test", choices=SPLITS, help="(default: %(default)s)")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(run=_evaluate)

    p = commands.add_parser("predict", help="probability that each review is positive")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or URI (see results.json)")
    p.add_argument("texts", nargs="*", help="review texts")
    p.add_argument(
        "--file", help="one review per line (.txt), or a .csv / .parquet with a review or text column"
    )
    p.set_defaults(run=_predict)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        args = build_parser().parse_args(argv)
        if hasattr(args, "verbose"):  # a command that runs Ray (predict, compare, summary import none of it)
            from rnn_models.cluster import show_ray_logs

            show_ray_logs(args.verbose)
        args.run(args)
    except UserError as e:
        if "--debug" in itertools.takewhile(
            lambda a: a.startswith("-"), argv
        ):  # an option before the command
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
