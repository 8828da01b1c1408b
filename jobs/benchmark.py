"""Benchmark the pipeline against plain baselines, in one run; prints a table, writes benchmark.json.

    python jobs/benchmark.py --source ../shared/data/imdb                       # every section (~25 min here)
    python jobs/benchmark.py --source ../shared/data/imdb --sections tokenize,throughput
    ray job submit --working-dir . -- python jobs/benchmark.py --source /abs/path --work /abs/bench

Sections: end_to_end (runs jobs/train_all.py in its own process), tokenize, throughput, scaling, gpu.
"""

import argparse
import json
import os
from pathlib import Path

from rnn_models import benchmark as B
from rnn_models.cluster import connect
from rnn_models.config import ARCHS, DEFAULT_SOURCE, PrepareConfig
from rnn_models.data.prepare import prepare

SECTIONS = ("end_to_end", "tokenize", "throughput", "scaling", "gpu")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("--work", default="runs/benchmark", help="folder for prepared data, runs and benchmark.json")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--epochs", type=int, default=10, help="end_to_end epochs (the notebook's 10)")
    args = parser.parse_args()
    work, sections, archs = Path(args.work).resolve(), args.sections.split(","), args.archs.split(",")
    data_dir = str(work / "prepared")
    results = {}
    if "end_to_end" in sections:  # first: its job starts its own Ray, so nothing else runs meanwhile
        results["end_to_end"] = B.end_to_end(Path(__file__).with_name("train_all.py"), args.source, data_dir, archs,
                                             work, args.epochs, threads=os.cpu_count())
    connect()
    data = prepare(PrepareConfig(source=args.source, out=data_dir))
    if "tokenize" in sections:
        results["tokenize"] = B.tokenize(args.source, work)
    if "throughput" in sections:
        results["throughput"] = B.throughput(data, archs, work)
    if "scaling" in sections:
        results["scaling"] = B.scaling(data, "lstm", work)
    if "gpu" in sections:
        results["gpu"] = B.gpu(data, archs)
    (work / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    print(B.report(results), flush=True)
    print(f"written: {work / 'benchmark.json'}")
