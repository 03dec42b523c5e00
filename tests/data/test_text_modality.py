"""The text modality: the tokenizer trained on the run's corpus, its saved form, the text views, c-TF-IDF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from selfmeta.errors import SelfmetaError
from selfmeta.evaluation.topics import class_tfidf, describe_topics
from selfmeta.modalities import get_modality
from selfmeta.modalities.text import MASK, PAD, UNK, TextViews, Tokenizer, left_align

CORPUS = np.array(["Free entry to win a prize! Call 0800 now", "see you at the park later", "ok lol, see you",
                   "WIN cash now: txt WIN to 80086", "the cat sat on the mat", "", "Café crème at noon?"],
                  dtype=object)


@pytest.mark.parametrize("model", ["wordpiece", "bpe"])
def test_tokenizer_round_trip(model):
    tokenizer = Tokenizer(model=model, vocab_size=120, max_length=12, min_frequency=1).fit(CORPUS)
    ids = tokenizer(CORPUS)
    assert ids.shape == (len(CORPUS), 12) and ids.dtype == torch.int32
    vocab = tokenizer.vocabulary
    assert vocab[:3] == ["[PAD]", "[UNK]", "[MASK]"] and len(vocab) <= 120
    # Each row: its tokens, cut to 12, left-aligned, padded with 0; the empty document is one [UNK].
    for doc, row in zip(CORPUS, ids.tolist()):
        expected = tokenizer.tokenizer.encode(doc, add_special_tokens=False).ids[:12] or [UNK]
        assert row == expected + [PAD] * (12 - len(expected))
    # Lower-cased and accents stripped (BERT's normalizer): "Café" and "cafe" are the same tokens.
    assert tokenizer(np.array(["Café crème"], dtype=object)).tolist() == tokenizer(
        np.array(["cafe creme"], dtype=object)).tolist()
    # The saved form gives the same ids, and nothing but JSON is stored.
    text = tokenizer.to_json()
    again = Tokenizer.from_json(text, "saved")
    assert torch.equal(again(CORPUS), ids) and again.vocabulary == vocab
    assert json.loads(text)["selfmeta_tokenizer"]["max_length"] == 12


def test_tokenizer_keeps_case_when_asked():
    tokenizer = Tokenizer(vocab_size=200, lowercase=False, min_frequency=1).fit(CORPUS)
    assert tokenizer(np.array(["WIN"], dtype=object)).tolist() != tokenizer(np.array(["win"], dtype=object)).tolist()


def test_tokenizer_bad_options_and_files():
    with pytest.raises(SelfmetaError, match="vocab_size=3 leaves no room beside the 3 special tokens"):
        Tokenizer(vocab_size=3)
    with pytest.raises(SelfmetaError, match="max_length must be at least 1"):
        Tokenizer(max_length=0)
    with pytest.raises(SelfmetaError, match="saved.json: not a selfmeta tokenizer"):
        Tokenizer.from_json('{"tokenizer": 1}', "saved.json")
    with pytest.raises(SelfmetaError, match="x: not a selfmeta tokenizer"):
        Tokenizer.from_json("not json", "x")


def test_to_model_keeps_the_width_and_encoders_trim():
    from selfmeta.encoders.text import trim

    x = torch.tensor([[5, 6, 0, 0, 0], [7, 0, 0, 0, 0]], dtype=torch.int32)
    out = get_modality("text").to_model(x, "cpu")
    assert out.dtype == torch.int64 and out.tolist() == x.tolist()
    assert trim(out).tolist() == [[5, 6], [7, 0]]


def test_check_refuses_floats_and_negative_ids():
    spec = get_modality("text")
    with pytest.raises(SelfmetaError, match="token ids"):
        spec.check(torch.zeros(2, 4), "d")
    with pytest.raises(SelfmetaError, match=">= 0"):
        spec.check(torch.tensor([[1, -1]]), "d")


def test_left_align_against_a_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, 50, (6, 9), generator=g)
    keep = torch.rand(6, 9, generator=g) < 0.6
    out = left_align(x, keep)
    for row, k, o in zip(x.tolist(), keep.tolist(), out.tolist()):
        kept = [t for t, flag in zip(row, k) if flag]
        assert o == kept + [PAD] * (9 - len(kept))


def _batch(g: torch.Generator) -> torch.Tensor:
    """(64, 20) ids 3..99, left-aligned documents of 1 to 20 tokens."""
    lengths = torch.randint(1, 21, (64,), generator=g)
    x = torch.randint(3, 100, (64, 20), generator=g)
    return x.masked_fill(torch.arange(20) >= lengths.unsqueeze(1), PAD)


@pytest.mark.parametrize("options", [
    {"crop": (0.3, 0.8), "dropout": 0.0, "shuffle": 0, "mask": 0.0},
    {"crop": (1.0, 1.0), "dropout": 0.5, "shuffle": 0, "mask": 0.0},
    {"crop": (1.0, 1.0), "dropout": 0.0, "shuffle": 3, "mask": 0.0},
    {"crop": (1.0, 1.0), "dropout": 0.0, "shuffle": 0, "mask": 0.5},
    {"crop": (0.5, 1.0), "dropout": 0.2, "shuffle": 2, "mask": 0.2},
])
def test_views_keep_the_padding_mask_right(options):
    g = torch.Generator().manual_seed(1)
    x = _batch(g)
    torch.manual_seed(0)
    views = TextViews((20,), **options)
    v = views(x)
    assert v.shape == x.shape and v.dtype == x.dtype
    lengths = (x != PAD).sum(1)
    new_lengths = (v != PAD).sum(1)
    for row, view, n, m in zip(x.tolist(), v.tolist(), lengths.tolist(), new_lengths.tolist()):
        assert 1 <= m <= n                                          # at least one token, never more
        assert all(t != PAD for t in view[:m]) and all(t == PAD for t in view[m:])   # left-aligned, padded
        tokens = [t for t in view[:m] if t != MASK]
        if options["crop"] != (1.0, 1.0) and options["dropout"] == 0 and options["shuffle"] == 0:
            # a contiguous span of the document, at least the low fraction of it
            assert m >= int(np.ceil(options["crop"][0] * n)) and any(row[s : s + m] == view[:m] for s in range(n))
        if options["shuffle"] and options["dropout"] == 0 and options["crop"] == (1.0, 1.0):
            assert sorted(view[:m]) == sorted(row[:n])              # a permutation ...
            for i, t in enumerate(view[:m]):                         # ... moving each token at most 3 places
                assert any(row[j] == t for j in range(max(0, i - 3), min(n, i + 4)))
        if options["mask"] and options["crop"] == (1.0, 1.0) and not options["dropout"] and not options["shuffle"]:
            assert all(a == b or b == MASK for a, b in zip(row[:n], view[:n]))
        if options["dropout"] and options["crop"] == (1.0, 1.0) and not options["shuffle"] and not options["mask"]:
            it = iter(row[:n])                                      # a subsequence, in order
            assert all(any(t == s for s in it) for t in tokens)
    if options["mask"] == 0.5:
        assert 0.4 < float((v == MASK).sum()) / float(lengths.sum()) < 0.6


def test_views_all_off_are_the_identity_simcse():
    x = _batch(torch.Generator().manual_seed(2))
    assert torch.equal(TextViews((20,), crop=(1.0, 1.0), dropout=0.0, shuffle=0, mask=0.0)(x), x)


def test_class_tfidf_by_hand():
    counts = np.array([[2, 0, 1], [0, 3, 1]])
    # A = 7 / 2 words per cluster; f = (2, 3, 2); row 0 tf = (2/3, 0, 1/3), row 1 (0, 3/4, 1/4).
    expected = np.array([[2 / 3 * np.log(1 + 3.5 / 2), 0, 1 / 3 * np.log(1 + 3.5 / 2)],
                         [0, 3 / 4 * np.log(1 + 3.5 / 3), 1 / 4 * np.log(1 + 3.5 / 2)]])
    assert np.allclose(class_tfidf(counts), expected)


def test_topics_name_clusters_by_their_words():
    documents = np.array(["win cash prize now", "cash prize win", "prize win cash txt",
                          "see you at home", "home later see you", "see you home soon"], dtype=object)
    clusters = np.array([0, 0, 0, 1, 1, 1])
    features = np.array([[1, 0.1], [1, 0], [1, 0.2], [0, 1], [0.1, 1], [0.2, 0.9]])  # item 0: the centre of 0-2
    topics = describe_topics(documents, clusters, features, top=3, examples=1)
    assert [t["size"] for t in topics] == [3, 3]
    assert set(topics[0]["words"]) == {"win", "cash", "prize"} and set(topics[1]["words"]) <= {"home", "later", "soon"}
    assert topics[0]["examples"] == ["win cash prize now"]          # nearest the cluster's mean feature
