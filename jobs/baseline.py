"""The linear baselines (uni+bigram logistic regression, TF-IDF and NB weighted) on the RNNs' tokens and splits.

    pip install -e '.[baseline]'
    python jobs/baseline.py --source ../shared/data/imdb --out runs/baseline

Every `rnn-models baseline` option applies (`python jobs/baseline.py --help`).
"""

import sys

from rnn_models.cli import main

if __name__ == "__main__":
    sys.exit(main(["baseline", *sys.argv[1:]]))
