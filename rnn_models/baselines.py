"""Linear baselines on the RNNs' own tokens (`rnn-models baseline`): uni+bigram logistic regression on TF-IDF
weights and on naive-Bayes log-count ratios (Wang & Manning 2012, "NB-LR"), the anchors an RNN on IMDB has to
beat.

The splits are prepare's own (`split_reviews` with `--val-size dev_size` and the seed), so a run prepared with
`--val-size 5000 --seed 0` holds the same train, dev and test reviews in the same order. The regularisation of
each model is chosen on dev; the test split is scored once, by the chosen model. scikit-learn is an optional
extra: `pip install -e '.[baseline]'`.
"""

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rnn_models.config import BaselineConfig, PrepareConfig
from rnn_models.data.sources import load_reviews
from rnn_models.data.splits import split_reviews
from rnn_models.data.text import normalise
from rnn_models.errors import UserError
from rnn_models.files import write_json
from rnn_models.report import interval
from rnn_models.stats import KEYED_BY_SOURCE_ORDER, PREDICTIONS_FILE, paired

C_GRID = (
    0.01,
    0.03,
    0.1,
    0.3,
    1.0,
    3.0,
    10.0,
    30.0,
    100.0,
    300.0,
    1000.0,
)  # inverse regularisation strengths, tried on dev
MIN_DF = 2  # an n-gram in one train review only is dropped (fixed beforehand, not tuned)
MODELS = ("nb_lr", "tfidf_lr")

log = logging.getLogger(__name__)


def run_baselines(cfg: BaselineConfig) -> dict:
    """Fit both baselines, choose each one's C on dev, score test once; write baseline.json, baseline.md and
    test_predictions.parquet (each test review's key, its position in the source's canonical order, its label and
    both models' probabilities) to `cfg.out`."""
    sklearn = _sklearn()
    started = time.monotonic()
    splits = _splits(cfg)
    labels = {name: table["label"].to_numpy().astype(int) for name, table in splits.items()}
    log.info(
        "train %d, dev %d, test %d reviews; tokenising", *(len(labels[s]) for s in ("train", "val", "test"))
    )
    tokens = {name: normalise(table["text"], cfg.strip_br).to_pylist() for name, table in splits.items()}
    results, probabilities, correct = {}, {}, {}
    for model in MODELS:
        features = _features(model, tokens, labels["train"], sklearn)
        dev = {}
        for c in C_GRID:
            classifier = _fit(features["train"], labels["train"], c, sklearn)
            dev[c] = float(np.mean(classifier.predict(features["val"]) == labels["val"]))
            log.info("%s C=%g: dev accuracy %.4f", model, c, dev[c])
        best = max(C_GRID, key=lambda c: (dev[c], -c))  # ties: the stronger regularisation
        classifier = _fit(features["train"], labels["train"], best, sklearn)
        probabilities[model] = classifier.predict_proba(features["test"])[:, 1]  # the test split, scored once
        correct[model] = (probabilities[model] >= 0.5) == labels["test"]
        accuracy = float(np.mean(correct[model]))
        results[model] = {
            "dev_accuracy_by_C": {str(c): a for c, a in dev.items()},
            "C": best,
            "dev_accuracy": dev[best],
            "test_accuracy": accuracy,
            "test_interval": interval(accuracy, len(labels["test"])),
            "features": features["count"],
        }
        log.info("%s: C=%g chosen on dev (%.4f); test accuracy %.4f", model, best, dev[best], accuracy)
    comparison = paired(correct["nb_lr"], correct["tfidf_lr"])
    document = {
        "config": asdict(cfg),
        "reviews": {s: len(labels[s]) for s in ("train", "val", "test")},
        "results": results,
        "paired": {
            "a": "nb_lr",
            "b": "tfidf_lr",
            **asdict(comparison),
            "line": comparison.line("nb_lr", "tfidf_lr"),
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    _write(Path(cfg.out), document, splits["test"]["review"].to_numpy(), labels["test"], probabilities)
    return document


def _sklearn():
    try:
        import sklearn.feature_extraction.text
        import sklearn.linear_model
    except ImportError as e:
        raise UserError("baseline needs scikit-learn: pip install -e '.[baseline]'") from e
    return sklearn


def _splits(cfg: BaselineConfig) -> dict[str, pa.Table]:
    prepare = PrepareConfig(
        source=cfg.source,
        val_size=cfg.dev_size,
        seed=cfg.seed,
        max_reviews_per_split=cfg.max_reviews_per_split,
        strip_br=cfg.strip_br,
    )
    return split_reviews(load_reviews(cfg.source).table, prepare)


def uni_and_bigrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def _features(model: str, tokens: dict[str, list], train_labels: np.ndarray, sklearn) -> dict:
    """Each split's features, the vocabulary learnt on train: sublinear TF-IDF, or binary counts scaled by
    the NB log-count ratio r = log((p / |p|) / (q / |q|)), p and q the positive and negative counts + 1."""
    text = sklearn.feature_extraction.text
    if model == "tfidf_lr":
        vectorizer = text.TfidfVectorizer(analyzer=uni_and_bigrams, min_df=MIN_DF, sublinear_tf=True)
    else:
        vectorizer = text.CountVectorizer(analyzer=uni_and_bigrams, min_df=MIN_DF, binary=True)
    features = {"train": vectorizer.fit_transform(tokens["train"])}
    features.update({s: vectorizer.transform(tokens[s]) for s in ("val", "test")})
    if model == "nb_lr":
        p = 1 + np.asarray(features["train"][train_labels == 1].sum(axis=0)).ravel()
        q = 1 + np.asarray(features["train"][train_labels == 0].sum(axis=0)).ravel()
        ratio = np.log((p / p.sum()) / (q / q.sum()))
        features = {s: x.multiply(ratio).tocsr() for s, x in features.items()}
    return {**features, "count": int(features["train"].shape[1])}


def _fit(features, labels: np.ndarray, c: float, sklearn):
    # liblinear's dual solver: far more features than reviews
    return sklearn.linear_model.LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=2000).fit(
        features, labels
    )


def _write(out: Path, document: dict, reviews: np.ndarray, labels: np.ndarray, probabilities: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "baseline.json", document)
    columns = {m: probabilities[m].astype(np.float32) for m in MODELS}
    table = pa.table(
        {"review": reviews, "label": labels.astype(np.int8), **columns}, metadata=KEYED_BY_SOURCE_ORDER
    )
    pq.write_table(table, out / PREDICTIONS_FILE)
    (out / "baseline.md").write_text(report(document))


def report(document: dict) -> str:
    reviews = document["reviews"]
    lines = [
        f"Linear baselines: train {reviews['train']:,}, dev {reviews['val']:,}, test {reviews['test']:,} reviews "
        f"(seed {document['config']['seed']}); C chosen on dev, test scored once.",
        "",
        "| model | test accuracy (95% CI) | dev accuracy | C | features |",
        "|---|---:|---:|---:|---:|",
    ]
    for model, r in document["results"].items():
        lines.append(
            f"| {model} | {r['test_accuracy']:.2%} ± {r['test_interval']:.2%} | {r['dev_accuracy']:.2%} | "
            f"{r['C']:g} | {r['features']:,} |"
        )
    return "\n".join(lines + ["", document["paired"]["line"]]) + "\n"
