"""Prepare IMDB into tokenized parquet shards on its own, e.g. once on a cluster before many runs.

    python jobs/prepare.py --source ../shared/data/imdb --out data/prepared
    ray job submit --working-dir . -- python jobs/prepare.py --source /abs/path/aclImdb_v1.tar.gz --out /abs/out

Every `rnn-models prepare` option applies (`python jobs/prepare.py --help`).
"""

import sys

from rnn_models.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
