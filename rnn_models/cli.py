"""`rnn-models` command line: each subcommand's options are generated from the config dataclasses."""

import argparse
import dataclasses
import logging
import sys
import types

from rnn_models import config as C
from rnn_models.errors import UserError


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One `--option` per field of dataclass `cls`, with its type, default and help text."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = f.type
        if isinstance(kind, types.UnionType):  # `int | None`
            kind = next(t for t in kind.__args__ if t is not type(None))
        kwargs = {"dest": f.name, "default": f.default, "help": f.metadata.get("help", "") + " (default: %(default)s)"}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
        parser.add_argument(C.option_name(f.name), **kwargs)


def config_from(args: argparse.Namespace, cls, **overrides):
    """An instance of dataclass `cls` from the parsed options (validated by its `__post_init__`)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def _prepare(args) -> None:
    from rnn_models.data.prepare import prepare

    prepare(config_from(args, C.PrepareConfig), force=args.force, address=args.address)


def _summary(args) -> None:
    from rnn_models.models import model_from_config
    from rnn_models.models.summary import summarize

    for arch in args.arch.split(","):
        cfg = config_from(args, C.ModelConfig, arch=arch)
        print(f"== {arch} ==")
        print(summarize(model_from_config(cfg, args.vocab_size, args.max_len), args.max_len))


ADDRESS_HELP = "Ray cluster to join (default: $RAY_ADDRESS, or one `ray start` runs here; else start a local one)"
PREPARE_OPTIONS_FOR_TRAIN = ("vocab_size", "max_len", "val_size", "max_reviews_per_split", "strip_br")


def _train(args) -> None:
    from rnn_models.experiment import train

    run = config_from(args, C.RunConfig)
    train_cfg = config_from(args, C.TrainConfig)
    model = {k: v for k, v in dataclasses.asdict(config_from(args, C.ModelConfig, arch=C.ARCHS[0])).items() if k != "arch"}
    if args.source:
        from rnn_models.data.prepare import prepare

        prepare(config_from(args, C.PrepareConfig, source=args.source, out=run.data, seed=train_cfg.seed),
                address=args.address)
    train(run, model, train_cfg, resume=args.resume, address=args.address)


def _evaluate(args) -> None:
    from rnn_models.cluster import connect
    from rnn_models.data.prepared import open_prepared
    from rnn_models.training.evaluation import open_checkpoint, test_checkpoint
    from rnn_models.training.ingest import DataSpec

    connect(args.address)
    loaded = open_checkpoint(args.checkpoint)
    result = test_checkpoint(loaded, DataSpec.from_prepared(open_prepared(args.data)), args.split)
    print(f"{loaded.model_config.arch} epoch {loaded.meta['epoch']}: {args.split} accuracy {result.accuracy:.4f}, "
          f"loss {result.mean_loss:.4f} over {result.count} reviews")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnn-models", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for user errors")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("prepare", help="tokenize IMDB reviews into parquet shards")
    add_options(p, C.PrepareConfig)
    p.add_argument("--force", action="store_true", help="rebuild even if --out already holds this data")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.set_defaults(run=_prepare)

    p = commands.add_parser("train", help="train architectures as parallel Ray Tune trials and report test accuracy")
    add_options(p, C.RunConfig)
    add_options(p, C.TrainConfig)
    add_options(p, C.ModelConfig, skip=("arch",))
    p.add_argument("--source", help="prepare this source into --data first (cached); see `prepare --help`")
    prepare_fields = [f.name for f in dataclasses.fields(C.PrepareConfig)]
    add_options(p, C.PrepareConfig, skip=tuple(n for n in prepare_fields if n not in PREPARE_OPTIONS_FOR_TRAIN))
    p.add_argument("--resume", action="store_true", help="continue the run --name where it stopped")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.set_defaults(run=_train)

    p = commands.add_parser("evaluate", help="accuracy of a checkpoint on a prepared split")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or URI (see results.json)")
    p.add_argument("--data", required=True, help="prepared data directory made with the same vocabulary")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="(default: %(default)s)")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.set_defaults(run=_evaluate)

    p = commands.add_parser("summary", help="print the layers, shapes and parameters of an architecture")
    add_options(p, C.ModelConfig)
    p.add_argument("--vocab-size", type=int, default=1024, help="vocabulary size K (default: %(default)s)")
    p.add_argument("--max-len", type=int, default=64, help="review length T (default: %(default)s)")
    p.set_defaults(run=_summary, arch=",".join(C.ARCHS))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        args.run(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
