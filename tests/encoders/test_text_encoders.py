"""The text encoders (fasttext, transformer) against slow pure-Python references, on real vocabularies."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from selfmeta.encoders import build_encoder
from selfmeta.encoders.text import (
    FastTextBag,
    TextTransformer,
    char_ngrams,
    fnv1a_32,
    subword_scheme,
    token_ngram_hash,
)
from selfmeta.errors import SelfmetaError

SENTENCES = [
    "The cat sat on the mat.",
    "A dog barked at the mailman, twice!",
    "Playing chess is harder than playing checkers.",
    "She sells sea shells by the sea shore.",
    "Transformers encode tokens; bags average them.",
    "Unbelievably, the unhappy hippo smiled.",
    "Running, jumping and swimming are sports.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Naïve café owners serve crème brûlée.",
    "Tokenizers split words into smaller pieces.",
    "The quick brown fox jumps over the lazy dog.",
    "Rain falls softly on the quiet village.",
    "Numbers like 42 and 1999 appear in text.",
    "Self-supervised learning needs no labels.",
    "Meta-learning adapts quickly to new tasks.",
    "Hashing maps many n-grams into few buckets.",
    "Kittens and puppies played in the garden.",
    "He reads books, she writes poems.",
    "Learning rates decay during training.",
    "## Headings start with hashes in markdown.",
]
SPECIALS = ["[PAD]", "[UNK]", "[MASK]"]
L = 16


def vocabulary_of(tokenizer: Tokenizer) -> list[str]:
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    return [by_id[i] for i in range(len(by_id))]


def train(kind: str) -> tuple[Tokenizer, list[str]]:
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS)
    else:
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", end_of_word_suffix="</w>"))
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, end_of_word_suffix="</w>")
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(SENTENCES, trainer)
    vocabulary = vocabulary_of(tokenizer)
    assert vocabulary[:3] == SPECIALS
    return tokenizer, vocabulary


@pytest.fixture(scope="module", params=["wordpiece", "bpe"])
def tokenized(request):
    tokenizer, vocabulary = train(request.param)
    return request.param, vocabulary, batch_of(tokenizer, SENTENCES[:6])


def batch_of(tokenizer: Tokenizer, texts: list[str]) -> torch.Tensor:
    """(B, L') ids, padded at the end with 0 to the longest row (at most L - 3, to leave room for 3 more)."""
    rows = [tokenizer.encode(t).ids[: L - 3] for t in texts]
    x = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.int64)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    return x


# --- references -------------------------------------------------------------------------------------------


def fnv_reference(text: str) -> int:
    h = 0x811C9DC5
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x01000193) % 2**32
    return h


def char_ngrams_reference(token: str, kind: str, low: int, high: int) -> list[str]:
    """fastText's n-grams of '<' + word + '>', with only the boundaries the token string shows marked."""
    if low == 0:
        return []
    if kind == "wordpiece":
        cont = token.startswith("##") and len(token) > 2
        word = token[2:] if cont else "<" + token
        skip = set() if cont else {0}
    else:
        end = token.endswith("</w>") and len(token) > 4
        word = token[:-4] + ">" if end else token
        skip = {len(word) - 1} if end else set()
    out = []
    for n in range(low, high + 1):
        for i in range(len(word) - n + 1):
            if not (n == 1 and i in skip):
                out.append(word[i : i + n])
    return out


def ngram_hash_reference(ids: list[int]) -> int:
    h = len(ids)
    for t in ids:
        h = (h * 116049371 + t + 1) % (2**31 - 1)
    return h


def bag_reference(model: FastTextBag, vocabulary: list[str], kind: str, x: torch.Tensor) -> torch.Tensor:
    """The bag's features, one row, one token and one n-gram at a time, from the embedding weights."""
    low, high = model.char_ngrams
    buckets = model.buckets.weight
    out = []
    for row in x.tolist():
        ids = [t for t in row if t != 0]
        vectors = []
        for t in ids:
            v = model.tokens.weight[t].clone()
            grams = char_ngrams_reference(vocabulary[t], kind, low, high) if t >= 3 else []
            if grams:
                v += torch.stack([buckets[fnv_reference(g) % buckets.shape[0]] for g in grams]).mean(0)
            vectors.append(v)
        for n in range(2, model.word_ngrams + 1):
            for i in range(len(ids) - n + 1):
                vectors.append(buckets[ngram_hash_reference(ids[i : i + n]) % buckets.shape[0]])
        out.append(torch.stack(vectors).mean(0))
    return model.norm(torch.stack(out))


# --- hashing and n-grams ----------------------------------------------------------------------------------


def test_fnv1a_known_values_and_reference():
    # Published FNV-1a 32-bit test vectors.
    assert fnv1a_32("") == 0x811C9DC5
    assert fnv1a_32("a") == 0xE40C292C
    assert fnv1a_32("foobar") == 0xBF9CF968
    for text in ["<the", "ing>", "über", "crème", "##", "</w>"]:
        assert fnv1a_32(text) == fnv_reference(text)


def test_subword_scheme():
    assert subword_scheme(train("wordpiece")[1]) == "wordpiece"
    assert subword_scheme(train("bpe")[1]) == "bpe"  # holds '##</w>' (the markdown heading), still BPE
    assert subword_scheme(SPECIALS + ["cat", "sat"]) == "words"
    assert char_ngrams("cat", "words", 3, 5) == ["<ca", "<cat", "<cat>", "cat", "cat>", "at>"]


def test_char_ngrams_match_reference(tokenized):
    kind, vocabulary, _ = tokenized
    assert kind in ("wordpiece", "bpe")
    for low, high in [(3, 5), (1, 2), (2, 6)]:
        for token in vocabulary[3:]:
            assert Counter(char_ngrams(token, kind, low, high)) == Counter(
                char_ngrams_reference(token, kind, low, high)), token
    if kind == "wordpiece":
        assert Counter(char_ngrams("##ing", kind, 3, 5)) == Counter(["ing"])
        assert Counter(char_ngrams("play", kind, 3, 4)) == Counter(["<pl", "<pla", "pla", "play", "lay"])
    else:
        assert Counter(char_ngrams("ing</w>", kind, 3, 4)) == Counter(["ing", "ing>", "ng>"])


def test_ngram_table_is_per_token_and_not_saved(tokenized):
    kind, vocabulary, _ = tokenized
    model = FastTextBag((L,), vocabulary, dim=8, buckets=1000)
    index, offsets = model.ngram_index.tolist(), model.ngram_offsets.tolist() + [model.ngram_index.numel()]
    for t, token in enumerate(vocabulary):
        got = index[offsets[t] : offsets[t + 1]]
        want = [] if t < 3 else [fnv_reference(g) % 1000 for g in char_ngrams_reference(token, kind, 3, 5)]
        assert Counter(got) == Counter(want), token
    state = model.state_dict()
    assert not any("ngram" in k for k in state)
    clone = FastTextBag((L,), vocabulary, dim=8, buckets=1000)
    clone.load_state_dict(state)  # strict: the buffers are rebuilt, not loaded
    assert torch.equal(clone.ngram_index, model.ngram_index)


def test_token_ngram_hash_matches_reference():
    g = torch.Generator().manual_seed(0)
    grams = torch.randint(0, 8000, (5, 7, 3), generator=g)
    got = token_ngram_hash(grams)
    assert got.shape == (5, 7) and got.dtype == torch.int64
    for i in range(5):
        for j in range(7):
            assert int(got[i, j]) == ngram_hash_reference(grams[i, j].tolist())
    # Order matters, and n-grams of different lengths differ.
    assert int(token_ngram_hash(torch.tensor([3, 4]))) != int(token_ngram_hash(torch.tensor([4, 3])))
    assert int(token_ngram_hash(torch.tensor([0, 5]))) != int(token_ngram_hash(torch.tensor([5])))


# --- the encoders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"word_ngrams": 3}, {"char_ngrams": (0, 0)}, {"char_ngrams": (2, 3),
                                                                                       "word_ngrams": 1}])
def test_bag_matches_python_loop(tokenized, options):
    kind, vocabulary, x = tokenized
    torch.manual_seed(0)
    model = FastTextBag((L,), vocabulary, dim=16, buckets=997, **options).eval()
    with torch.no_grad():
        got = model.forward_features(x)
        if model.buckets is None:  # no n-grams at all: tokens only
            model.buckets = torch.nn.Embedding(1, 16)
        want = bag_reference(model, vocabulary, kind, x)
    assert got.shape == (x.shape[0], 16)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_transformer_mean_pools_over_tokens(tokenized):
    _, vocabulary, x = tokenized
    torch.manual_seed(0)
    model = TextTransformer((L,), vocabulary, dim=32, depth=2, heads=4).eval()
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        features = model.forward_features(x)
    assert tokens.shape == (*x.shape, 32) and features.shape == (x.shape[0], 32)
    for i, row in enumerate(x):
        n = int((row != 0).sum())
        assert torch.allclose(features[i], tokens[i, :n].mean(0), atol=1e-5)


@pytest.mark.parametrize("name", ["fasttext", "transformer"])
def test_trailing_padding_changes_nothing(tokenized, name):
    _, vocabulary, x = tokenized
    torch.manual_seed(0)
    model = build_encoder(name, (L,), "text", inputs={"vocabulary": vocabulary}, dim=32).eval()
    longer = torch.cat([x, torch.zeros(x.shape[0], 3, dtype=x.dtype)], 1)
    with torch.no_grad():
        a, b = model.forward_features(x), model.forward_features(longer)
        # One row alone, trimmed to its own length, as the engine would batch it.
        n = int((x[-1] != 0).sum())
        alone = model.forward_features(x[-1:, :n])
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[-1:], alone, atol=1e-5)


@pytest.mark.parametrize("name", ["fasttext", "transformer"])
def test_gradients_reach_the_embeddings_and_autocast(tokenized, name):
    _, vocabulary, x = tokenized
    torch.manual_seed(0)
    model = build_encoder(name, (L,), "text", inputs={"vocabulary": vocabulary}, dim=32, dropout=0.1)
    features = model.forward_features(x)
    assert features.shape == (x.shape[0], model.num_features) == (x.shape[0], 32)
    (features * torch.randn_like(features)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, pname
    # Dropout is noise in training (SimCSE: two passes are two views), none in eval.
    assert not torch.allclose(model.forward_features(x), model.forward_features(x))
    model.eval()
    assert torch.equal(model.forward_features(x), model.forward_features(x))
    model.train().zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.forward_features(x)
    assert low.shape == features.shape and bool(torch.isfinite(low).all())
    low.float().sum().backward()
    assert float(model.tokens.weight.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.forward_features(x)
        assert float(torch.cosine_similarity(low.float(), model.forward_features(x)).min()) > 0.99


def test_build_encoder_and_bad_options():
    _, vocabulary = train("wordpiece")
    inputs = {"vocabulary": vocabulary}
    encoder = build_encoder("fasttext", (16,), "text", inputs=inputs)
    assert isinstance(encoder, FastTextBag) and encoder.num_features == 128
    assert isinstance(build_encoder("transformer", (16,), "text", inputs=inputs), TextTransformer)
    with pytest.raises(SelfmetaError, match="encoder 'fasttext' does not take image data"):
        build_encoder("fasttext", (16,), "image")
    with pytest.raises(SelfmetaError, match="heads must divide dim"):
        build_encoder("transformer", (16,), "text", inputs=inputs, dim=30, heads=4)
    with pytest.raises(SelfmetaError, match="option char_ngrams takes .*low <= high"):
        build_encoder("fasttext", (16,), "text", inputs=inputs, char_ngrams=(5, 3))
    with pytest.raises(SelfmetaError, match="char_ngrams"):
        FastTextBag((16,), vocabulary, char_ngrams=(0, 3))
    with pytest.raises(SelfmetaError, match="longer than the encoder's maximum length 16"):
        build_encoder("transformer", (16,), "text", inputs=inputs).forward_features(torch.ones(2, 17).long())


def test_hashed_ngrams_gradient_is_exact():
    """The hand-written backward (an embedding_bag over S^T, the token n-grams index-added) against
    finite differences, in float64, with shared buckets, special tokens' empty bags and no token n-grams."""
    vocabulary = SPECIALS + ["cat", "##s", "at", "a", "##ta"]
    torch.manual_seed(0)
    model = FastTextBag((8,), vocabulary, dim=3, buckets=7, char_ngrams=(1, 3)).double()
    gram_ids = torch.tensor([[1, 1, 6], [0, 4, 2]])
    gram_weights = torch.rand(2, 3, dtype=torch.float64)
    table = model.buckets.weight  # gradcheck perturbs it in place, so the lambda sees each change
    assert torch.autograd.gradcheck(lambda _: model.hashed_ngrams(gram_ids, gram_weights), (table,))
    no_grams = torch.zeros(2, 0, dtype=torch.int64), torch.zeros(2, 0, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda _: model.hashed_ngrams(*no_grams), (table,))


def test_transformer_length_groups_change_the_cost_not_the_features():
    """Rows run in groups of similar length, each cut to its longest: the same features as one padded batch."""
    vocab = ["[PAD]", "[UNK]", "[MASK]"] + [f"w{i}" for i in range(40)]
    torch.manual_seed(0)
    lengths = torch.randint(1, 25, (13,))
    x = torch.randint(3, len(vocab), (13, 24)).masked_fill(torch.arange(24) >= lengths.unsqueeze(1), 0)
    one = build_encoder("transformer", (24,), "text", inputs={"vocabulary": vocab}, dim=16, heads=2,
                        length_groups=1).eval()
    grouped = build_encoder("transformer", (24,), "text", inputs={"vocabulary": vocab}, dim=16, heads=2,
                            length_groups=5).eval()
    grouped.load_state_dict(one.state_dict())
    with torch.no_grad():
        assert torch.allclose(one.forward_features(x), grouped.forward_features(x), atol=1e-5)
