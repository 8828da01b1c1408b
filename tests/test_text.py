"""The tokenisation rule: hand-written cases, both implementations, and exact encoding."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rnn_models.data.text import encode, normalise, normalise_reference

CASES = [
    ("Hello, World!", ["hello", "world"]),
    ("It's a 10/10 movie.", ["its", "a", "1010", "movie"]),
    ("Great<br /><br />Fun", ["greatbr", "br", "fun"]),  # the space inside "<br />" splits
    ("Great. <br /><br /> Fun", ["great", "br", "br", "fun"]),
    ("«Très» bien — ¿no? 「映画」、最高", ["très", "bien", "no", "映画最高"]),
    ("Price: $5 + €3 = £8 © ® ™ ★ ♥", ["price", "5", "3", "8"]),
    ("Loved it 😀👍🏽 a lot", ["loved", "it", "a", "lot"]),
    ("ÉCOLE Naïve ÜBER straße ΑΘΗΝΑ", ["école", "naïve", "über", "straße", "αθηνα"]),
    (
        "tabs\tand\nnewlines\r\nand\u00a0nbsp\u3000ideographic",
        ["tabs", "and", "newlines", "and", "nbsp", "ideographic"],
    ),
    ("snake_case and dashes-here and ...dots", ["snakecase", "and", "dasheshere", "and", "dots"]),
    ("", []),
    ("   \t\n ", []),
    ("!!! ... ???", []),
]


@pytest.mark.parametrize("text, tokens", CASES)
def test_both_implementations_give_the_expected_tokens(text, tokens):
    assert normalise_reference(text) == tokens
    assert normalise(pa.array([text])).to_pylist() == [tokens]


def test_strip_br_turns_line_breaks_into_spaces():
    texts = ["Great<br /><br />Fun", "a<br/>b<BR>c <br  /> d"]
    expected = [["great", "fun"], ["a", "b", "c", "d"]]
    assert normalise(pa.array(texts), strip_br=True).to_pylist() == expected
    assert [normalise_reference(t, strip_br=True) for t in texts] == expected


def test_vectorised_rule_matches_the_reference_on_real_reviews(imdb_path):
    texts = pq.read_table(imdb_path / "plain_text" / "test-00000-of-00001.parquet")["text"]
    sample = texts.take(np.random.default_rng(0).choice(len(texts), 1500, replace=False))
    assert normalise(sample).to_pylist() == [normalise_reference(t) for t in sample.to_pylist()]


def test_encode_gives_exact_ids_lengths_and_padding():
    tokens = pa.array(
        [["the", "movie", "was", "good"], [], ["good", "good", "good", "the", "end", "x"]],
        pa.list_(pa.string()),
    )
    vocab = pa.array(["the", "good", "movie"])  # ids 2, 3, 4; anything else is 1
    out = encode(tokens, vocab, max_len=5)
    np.testing.assert_array_equal(out["ids"], [[2, 4, 1, 3, 0], [0, 0, 0, 0, 0], [3, 3, 3, 2, 1]])
    assert out["ids"].dtype == np.int32
    np.testing.assert_array_equal(out["length"], [4, 0, 5])  # ids that are not padding
    np.testing.assert_array_equal(out["num_tokens"], [4, 0, 6])  # before truncation
    np.testing.assert_array_equal(out["num_oov"], [1, 0, 2])  # over the whole review
