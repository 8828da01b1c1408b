"""predict: a checkpoint alone scores new reviews, tokenised exactly as in training."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rnn_models.cli import main
from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.data.text import encode, normalise
from rnn_models.errors import UserError
from rnn_models.models import model_from_config
from rnn_models.predict import Predictor, read_reviews
from rnn_models.training.checkpoint import checkpoint_meta, save_checkpoint
from rnn_models.training.loop import make_optimizer, train_epoch

VOCAB = ["the", "movie", "was", "great", "wonderful", "awful", "boring", "plot", "and"]
POSITIVE, NEGATIVE = ["great", "wonderful"], ["awful", "boring"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny LSTM trained on reviews whose sentiment is carried by four words."""
    g = torch.Generator().manual_seed(0)
    filler = ["the", "movie", "was", "plot", "and"]
    texts, labels = [], []
    for i in range(512):
        words = [filler[j] for j in torch.randint(0, 5, (6,), generator=g)]
        label = i % 2
        words.insert(
            int(torch.randint(0, 6, (1,), generator=g)), (POSITIVE if label else NEGATIVE)[i // 2 % 2]
        )
        texts.append(" ".join(words).capitalize() + "!")
        labels.append(label)
    columns = encode(normalise(pa.array(texts)), pa.array(VOCAB), 16)
    data = {
        "ids": torch.from_numpy(columns["ids"]),
        "length": torch.from_numpy(columns["length"]),
        "label": torch.tensor(labels, dtype=torch.float32),
    }
    batches = [{k: v[i : i + 32] for k, v in data.items()} for i in range(0, 512, 32)]
    model_cfg, train_cfg = ModelConfig(arch="lstm", hidden_size=16, embedding_size=8), TrainConfig(lr=1e-2)
    model = model_from_config(model_cfg, len(VOCAB), 16, seed=0)
    optimizer = make_optimizer(model, train_cfg)
    for _ in range(15):
        train_epoch(model, batches, optimizer, torch.device("cpu"))
    info = {
        "vocab_size": len(VOCAB),
        "max_len": 16,
        "vocab_sha256": "x",
        "fingerprint": "y",
        "strip_br": False,
    }
    path = tmp_path_factory.mktemp("checkpoint")
    save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        scheduler=None,
        meta=checkpoint_meta(15, model_cfg, train_cfg, info, []),
        vocab=VOCAB,
    )
    return path


def test_positive_reviews_score_above_negative_ones(checkpoint):
    positive = ["What a GREAT movie, the plot was wonderful.", "Wonderful!"]
    negative = ["Awful. The plot was boring and the movie awful.", "boring, boring movie"]
    scores = Predictor.load(str(checkpoint)).probabilities(positive + negative)
    assert min(scores[:2]) > 0.5 > max(scores[2:])


def test_a_checkpoint_uri_gives_the_same_scores_and_needs_no_ray(checkpoint):
    import subprocess
    import sys

    texts = ["What a GREAT movie", "boring, boring movie"]
    assert Predictor.load(f"file://{checkpoint}").probabilities(texts) == Predictor.load(
        str(checkpoint)
    ).probabilities(texts)
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, rnn_models.predict; print(sorted(m for m in "
            "sys.modules if m == 'ray' or m.startswith('ray.')))",
        ],
        capture_output=True,
        text=True,
    )
    assert imported.stdout.strip() == "[]", imported.stderr[-2000:]


def test_a_checkpoint_uri_without_a_checkpoint_names_the_uri(tmp_path):
    with pytest.raises(UserError, match=f"--checkpoint file://{tmp_path}: not a checkpoint of this tool"):
        Predictor.load(f"file://{tmp_path}")


def test_cli_scores_arguments_and_files(checkpoint, tmp_path, capsys):
    (tmp_path / "reviews.txt").write_text("A wonderful movie\n\nAn awful movie\n")
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                "Great plot",
                "--file",
                str(tmp_path / "reviews.txt"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    scores = [float(line.split("\t")[0]) for line in lines]
    assert [line.split("\t")[1] for line in lines] == ["Great plot", "A wonderful movie", "An awful movie"]
    assert scores[0] > 0.5 and scores[1] > 0.5 > scores[2]


def test_review_files_in_every_format(tmp_path):
    (tmp_path / "r.csv").write_text('review,sentiment\n"Good, really",positive\nBad,negative\n')
    pq.write_table(pa.table({"text": ["one", "two"]}), tmp_path / "r.parquet")
    assert read_reviews(str(tmp_path / "r.csv")) == ["Good, really", "Bad"]
    assert read_reviews(str(tmp_path / "r.parquet")) == ["one", "two"]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="needs a review or text column"):
        read_reviews(str(tmp_path / "bad.parquet"))


def test_nothing_to_predict(checkpoint, capsys):
    assert main(["predict", "--checkpoint", str(checkpoint)]) == 2
    assert "give review texts" in capsys.readouterr().err


def test_a_review_without_a_known_token_is_scored_and_flagged(checkpoint, capsys):
    assert main(["predict", "--checkpoint", str(checkpoint), "", "Great plot", "zzz qqq!"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3
    assert "warning: 2 review(s) had no token of the checkpoint's vocabulary (review 1, 3)" in err


def test_review_files_are_read_in_batches(tmp_path):
    from rnn_models.predict import BATCH, review_batches

    (tmp_path / "many.txt").write_text("".join(f"review {i}\n\n" for i in range(2 * BATCH + 3)))
    sizes = [len(batch) for batch in review_batches(str(tmp_path / "many.txt"))]
    assert sizes == [BATCH, BATCH, 3]
    (tmp_path / "ids.csv").write_text("review\n12\n\n7\n")  # numbers are reviews too
    assert read_reviews(str(tmp_path / "ids.csv")) == ["12", "7"]
    pq.write_table(pa.table({"review": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(UserError, match="column review has type int64, expected strings"):
        read_reviews(str(tmp_path / "ints.parquet"))


def test_an_empty_review_file(checkpoint, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["predict", "--checkpoint", str(checkpoint), "--file", str(tmp_path / "empty.txt")]) == 2
    assert "empty.txt: no reviews in it" in capsys.readouterr().err


def test_a_csv_whose_header_is_not_utf8_is_refused_by_name(tmp_path):
    """Found by the fuzz suite: pyarrow raises UnicodeDecodeError (not an Arrow error) for such a header."""
    from rnn_models.predict import review_batches

    bad = tmp_path / "reviews.csv"
    bad.write_bytes(b"\x80\r")
    with pytest.raises(UserError, match=rf"--file {bad}: unreadable"):
        review_batches(str(bad))
