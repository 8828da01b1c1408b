"""The notebook's tokenisation rule: downcase, delete Unicode punctuation and symbols, split on whitespace.

`normalise` is the vectorised form (pyarrow compute, C++ and RE2); `normalise_reference` is the same rule in
plain Python, one review at a time. The two are token-identical on all 50k IMDB reviews (the benchmark checks
every review; the tests check a sample and hand-written strings).
"""

import functools
import re
import sys
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PUNCTUATION_OR_SYMBOL = r"[\p{P}\p{S}]"  # RE2 syntax, as the notebook's ~r/[\p{P}\p{S}]/
LINE_BREAK = r"<br\s*/?>"  # the HTML line breaks IMDB reviews are full of


def normalise(texts: pa.Array, strip_br: bool = False) -> pa.ListArray:
    """Tokens of each text, as a list<string> array with no empty tokens."""
    lowered = pc.utf8_lower(_contiguous(texts))
    if strip_br:
        lowered = pc.replace_substring_regex(lowered, LINE_BREAK, " ")
    # Trimmed first, so the splitter yields no "" at either end; it merges runs of whitespace itself.
    cleaned = pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, PUNCTUATION_OR_SYMBOL, ""))
    no_tokens = pa.scalar([], pa.list_(pa.string()))  # a blank text splits into [""], which is no token
    return pc.if_else(pc.equal(cleaned, ""), no_tokens, pc.utf8_split_whitespace(cleaned))


def _contiguous(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


@functools.cache
def _deletion_table() -> dict[int, None]:
    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c))[0] in "PS"}


def normalise_reference(text: str, strip_br: bool = False) -> list[str]:
    """The rule in plain Python, one review at a time (the benchmark's single-process baseline)."""
    lowered = text.lower()
    if strip_br:
        lowered = re.sub(LINE_BREAK, " ", lowered)
    return lowered.translate(_deletion_table()).split()


def encode(tokens: pa.ListArray, vocab: pa.Array, max_len: int) -> dict[str, np.ndarray]:
    """Map tokens to ids (vocab position + 2, 1 = out-of-vocabulary), keep the first `max_len`, pad with 0.

    Returns `ids` (N, max_len) int32, `length` (ids that are not padding), and for statistics
    `num_tokens` (length before truncation) and `num_oov` (out-of-vocabulary tokens in the whole review).
    """
    tokens = _contiguous(tokens)
    num_tokens = pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
    flat_ids = pc.fill_null(pc.add(pc.index_in(pc.list_flatten(tokens), value_set=vocab), 2), 1)
    flat_ids = flat_ids.to_numpy(zero_copy_only=False).astype(np.int32)
    owner = np.repeat(np.arange(len(tokens)), num_tokens)  # review of each token
    position = np.arange(len(flat_ids)) - np.repeat(np.cumsum(num_tokens) - num_tokens, num_tokens)
    kept = position < max_len
    ids = np.zeros((len(tokens), max_len), dtype=np.int32)  # (N, T), 0 = padding
    ids[owner[kept], position[kept]] = flat_ids[kept]
    return {
        "ids": ids,
        "length": np.minimum(num_tokens, max_len).astype(np.int32),
        "num_tokens": num_tokens,
        "num_oov": np.bincount(owner[flat_ids == 1], minlength=len(tokens)),
    }
