"""Benchmark the pipeline against plain baselines, in one run; prints a table, writes benchmark.json.

    python jobs/benchmark.py --source ../shared/data/imdb                       # every section (~30 min here)
    python jobs/benchmark.py --source ../shared/data/imdb --sections tokenize,throughput
    python jobs/benchmark.py --source ../shared/data/imdb --sections gpu      # the GPU check, < 8 min on one GPU
    ray job submit --working-dir . -- python jobs/benchmark.py --source /abs/path --work /abs/bench

    python jobs/benchmark.py --source ../shared/data/imdb --sections scale --scale-factors 1,4
    python jobs/benchmark.py --source ../shared/data/imdb --sections scale --address HEAD:6379 --scale-out s3://b/p

Sections: end_to_end (runs jobs/train_all.py in its own process), tokenize, throughput, scaling, gpu, scale.
"""

import argparse
import sys
from pathlib import Path

from benchmarks import sections as benchmark  # jobs/benchmarks/, beside this script
from rnn_models.config import ARCHS, DEFAULT_SOURCE
from rnn_models.errors import UserError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument(
        "--work", default="runs/benchmark", help="folder for prepared data, runs and benchmark.json"
    )
    parser.add_argument("--sections", default=",".join(benchmark.SECTIONS))
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--epochs", type=int, default=10, help="end_to_end epochs (the notebook's 10)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="throughput: torch threads of both loops (default: what the resource rule gives one trial)",
    )
    parser.add_argument(
        "--scale-factors", default="1,4,16", help="scale: corpus sizes, in copies of the source"
    )
    parser.add_argument(
        "--address", help="scale: prepare on the Ray cluster at this address (default: a local Ray)"
    )
    parser.add_argument(
        "--scale-out", help="scale: where prepare writes (a folder or s3://…; default: --work)"
    )
    args = parser.parse_args()
    work = Path(args.work).resolve()
    try:
        results = benchmark.run(
            Path(__file__).with_name("train_all.py"),
            args.source,
            work,
            args.sections.split(","),
            args.archs.split(","),
            args.epochs,
            args.threads,
            tuple(int(f) for f in args.scale_factors.split(",")),
            args.address,
            args.scale_out,
        )
    except UserError as e:
        sys.exit(f"error: {e}")
    print(benchmark.report(results), flush=True)
    print(f"written: {work / 'benchmark.json'}")
