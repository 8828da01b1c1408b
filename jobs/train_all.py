"""The main job: prepare IMDB (cached), train all four architectures as parallel Ray Tune trials of Ray
Train DDP runs, test each one's best epoch and print the table.

    python jobs/train_all.py --source ../shared/data/imdb
    ray job submit --working-dir . -- python jobs/train_all.py --source /abs/path/aclImdb_v1.tar.gz

Every `rnn-models train` option applies (`python jobs/train_all.py --help`); without --source or --data it
prepares the default source, hf:stanfordnlp/imdb.
"""

import sys

from rnn_models.cli import main
from rnn_models.config import DEFAULT_SOURCE

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a.split("=")[0] in ("--source", "--data") for a in args):
        args += ["--source", DEFAULT_SOURCE]
    sys.exit(main(["train", *args]))
