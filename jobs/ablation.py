"""What each modelling choice is worth: one row per variant of one architecture, trained in this process.

    python jobs/ablation.py --source ../shared/data/imdb --preset frontier --arch bilstm \
        --variants '{"last state": {"readout": "last"}, "pooled": {}}'

Each variant is a JSON object of model and train options changed from the preset (`{}` is the preset itself);
`--variants` takes the JSON or a file holding it. Prints a markdown table, every row after the first paired
with the first on the same val reviews (put the base first); with --out, writes the rows as JSON.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from rnn_models import ablation
from rnn_models.errors import UserError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", help="raw reviews, prepared as the preset says (cached under data/)")
    parser.add_argument("--data", help="prepared data instead of --source")
    parser.add_argument("--preset", default="frontier")
    parser.add_argument("--arch", default="bilstm")
    parser.add_argument("--variants", default='{"preset": {}}')
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", help="JSON file for the rows (appended to, if it exists)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        rows = ablation.main(args.source, args.data, args.preset, args.arch, args.variants, args.threads)
    except UserError as e:
        sys.exit(f"error: {e}")
    print(ablation.table(rows), flush=True)
    if args.out:
        out = Path(args.out)
        previous = json.loads(out.read_text()) if out.exists() else []
        out.write_text(json.dumps(previous + rows, indent=2) + "\n")
