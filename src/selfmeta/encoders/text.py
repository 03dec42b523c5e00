"""Encoders for text: ``(B, L')`` int64 token ids, each row left-aligned and padded at the end with id 0.

The text modality's tokenizer (a Hugging Face ``tokenizers`` WordPiece or BPE model trained on the user's
corpus) supplies ``vocabulary``, the token string of each id; ids 0, 1 and 2 are ``[PAD]``, ``[UNK]`` and
``[MASK]``. ``L'`` <= ``L`` (``input_shape == (L,)``, the tokenizer's maximum length): the engine trims each
batch to its longest row, so both encoders ignore trailing padding and give the same features for any
``L'``.

- ``fasttext``: a fastText bag (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification"): the
  mean of the vectors of the row's tokens and of its hashed token n-grams, each token's vector enriched with
  its hashed character n-grams (Bojanowski et al. 2017, "Enriching Word Vectors with Subword Information").
  No interaction between positions beyond the n-grams; fast, a strong baseline for short texts.
- ``transformer``: a small pre-LN Transformer encoder (Vaswani et al. 2017; pre-LN as in Xiong et al. 2020)
  with learned positions, mean-pooled over the tokens; its dropout is the noise of SimCSE (Gao et al. 2021),
  so two passes over one batch are two views of it.

Both run ``forward_features`` on whole batches with tensor operations only (no Python loop over items or
tokens), and under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.encoders.base import ENCODERS, Encoder
from selfmeta.errors import SelfmetaError
from selfmeta.options import Option

PAD, UNK, MASK = 0, 1, 2
SPECIAL_IDS = 3  # ids below this are special tokens: no characters, no character n-grams

# Markers of the tokenizers this project trains (``tokenizers``' defaults for the two models).
CONTINUATION = "##"  # WordPiece: a token that continues a word starts with it
END_OF_WORD = "</w>"  # BPE with end_of_word_suffix="</w>": a token that ends a word ends with it


def token_ids(x: torch.Tensor) -> torch.Tensor:
    """(B, L') token ids as int64. Float ids (as ``to_unit`` leaves an integer tensor) are rounded back:
    ids below 2^24 are exact in float32."""
    return x.round().long() if x.is_floating_point() else x.long()


def trim(x: torch.Tensor) -> torch.Tensor:
    """(B, L) ids -> (B, L'): the columns up to the batch's longest document. Trailing all-padding columns
    change no feature, and cutting them makes a batch of short messages cost short sequences (the modality
    serves every batch at the full maximum length, so that batches prepared apart can be joined)."""
    if x.numel() == 0 or vmapped(x):
        return x
    return x[:, : max(int(present_tokens(x).sum(1).max()), 1)]


def weighted_bag(ids: torch.Tensor, table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, K) ids into a (V, dim) table, (B, K) weights -> (B, dim) the weighted sums of their rows. One
    ``embedding_bag``; inside ``torch.func`` transforms, which differentiate twice and embedding_bag's
    backward cannot be, a gather and a sum."""
    weights = weights.to(table.dtype)
    if vmapped(ids):
        return (table[ids] * weights.unsqueeze(-1)).sum(-2)
    return F.embedding_bag(ids, table, per_sample_weights=weights, mode="sum")


def vmapped(x: torch.Tensor) -> bool:
    """Whether ``x`` is seen inside ``torch.func`` transforms (MAML vmaps its tasks): shapes may not depend on the
    data there, so batches keep their full width and run as one group."""
    return torch._C._functorch.maybe_current_level() is not None  # inside a torch.func transform


def present_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, L') ids -> (B, L') bool: the positions holding a token (not ``[PAD]``)."""
    return x != PAD


def masked_mean(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, L', D) states, (B, L') bool -> (B, D): the mean over the kept positions (at least one per row)."""
    w = keep.unsqueeze(-1).to(h.dtype)
    return (h * w).sum(1) / w.sum(1).clamp_min(1)


# ---------------------------------------------------------------------------------------------------------
# fastText: hashing and character n-grams (pure functions, run once per vocabulary at construction)
# ---------------------------------------------------------------------------------------------------------

FNV_OFFSET, FNV_PRIME = 2166136261, 16777619


def fnv1a_32(text: str) -> int:
    """The 32-bit FNV-1a hash of ``text``'s UTF-8 bytes, the hash fastText gives its n-grams.

    Stable across processes and machines (Python's ``hash`` of a str is salted per process, so it would
    scatter a saved model's n-grams over other buckets). fastText XORs each byte as a *signed* char, which
    changes the hash of non-ASCII bytes; this is the standard FNV-1a (unsigned bytes), equal for ASCII.
    """
    h = FNV_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def subword_scheme(vocabulary: Sequence[str]) -> str:
    """How the vocabulary marks word boundaries: ``"bpe"`` (some token ends with ``</w>``), ``"wordpiece"``
    (some token starts with ``##``) or ``"words"`` (neither: every token is a whole word).

    BPE is tested first: its vocabulary can hold a token like ``##</w>`` (a run of ``#`` in the text),
    while a WordPiece vocabulary cannot hold ``</w>``-ended tokens (the pre-tokenizer splits ``<``, ``/``,
    ``w``, ``>`` apart).
    """
    tokens = vocabulary[SPECIAL_IDS:]
    if any(len(t) > len(END_OF_WORD) and t.endswith(END_OF_WORD) for t in tokens):
        return "bpe"
    if any(len(t) > len(CONTINUATION) and t.startswith(CONTINUATION) for t in tokens):
        return "wordpiece"
    return "words"


def token_word(token: str, scheme: str) -> tuple[str, bool, bool]:
    """A token -> (its characters without the subword marker, starts a word, ends a word).

    The token string shows one boundary only: a WordPiece token starts a word unless it begins with
    ``##`` (whether it also ends one depends on the next token), a BPE token ends a word if it ends with
    ``</w>`` (whether it also starts one depends on the previous token). The boundary the string does not
    show is left unmarked, so a token has one set of n-grams wherever it stands. A vocabulary of whole
    words (``"words"``) marks both.
    """
    if scheme == "wordpiece":
        if len(token) > len(CONTINUATION) and token.startswith(CONTINUATION):
            return token[len(CONTINUATION):], False, False
        return token, True, False
    if scheme == "bpe":
        if len(token) > len(END_OF_WORD) and token.endswith(END_OF_WORD):
            return token[: -len(END_OF_WORD)], False, True
        return token, False, False
    return token, True, True


def char_ngrams(token: str, scheme: str, low: int, high: int) -> list[str]:
    """The character n-grams (``low`` <= n <= ``high`` characters) of a token, as fastText takes them from
    a word: over ``<`` + word + ``>``, where ``<`` marks a word start and ``>`` a word end
    (:func:`token_word` says which a token shows), in order of start then length, repeats kept; a marker
    alone is not an n-gram. ``low == 0`` gives none.
    """
    if low == 0:
        return []
    core, starts, ends = token_word(token, scheme)
    word = ("<" if starts else "") + core + (">" if ends else "")
    grams = []
    for i in range(len(word)):
        for n in range(low, min(high, len(word) - i) + 1):
            if n == 1 and ((starts and i == 0) or (ends and i == len(word) - 1)):
                continue
            grams.append(word[i : i + n])
    return grams


def ngram_table(vocabulary: Sequence[str], low: int, high: int, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token's character n-gram buckets, flat: ``(index, offsets)`` with token ``t``'s bucket ids at
    ``index[offsets[t]:offsets[t + 1]]`` (the input format of ``nn.EmbeddingBag``). Special tokens have
    none."""
    scheme = subword_scheme(vocabulary)
    index: list[int] = []
    offsets = []
    for t, token in enumerate(vocabulary):
        offsets.append(len(index))
        if t >= SPECIAL_IDS:
            index.extend(fnv1a_32(g) % buckets for g in char_ngrams(token, scheme, low, high))
    return torch.tensor(index, dtype=torch.int64), torch.tensor(offsets, dtype=torch.int64)


def transpose_bags(index: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor,
                   rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bags of table rows (``index``, ``offsets``, per-entry ``weights``: a sparse (bags, rows) matrix S)
    -> the bags of S^T: for each of the ``rows`` table rows, the bags that hold it and their weights, in
    the same flat format. ``embedding_bag`` over S^T is the gradient of ``embedding_bag`` over S."""
    sizes = torch.diff(offsets, append=offsets.new_tensor([index.numel()]))
    bags = torch.repeat_interleave(torch.arange(offsets.numel()), sizes)    # (N,) the bag of each entry
    order = torch.argsort(index, stable=True)
    counts = torch.bincount(index, minlength=rows)
    return bags[order], counts.cumsum(0) - counts, weights[order]


class HashedNgrams(torch.autograd.Function):
    """The hashed n-gram vectors, from one table: the mean of every token's character n-grams' rows,
    ``chars`` (V, dim) = S @ table with S the fixed (V, buckets) matrix of :func:`ngram_table` (weights
    1 / the token's n-gram count), and the weighted sum of each row's token n-grams' rows, ``words`` (B, dim).

    Two ``F.embedding_bag`` calls compute the same, but each one's backward sorts its indices and zero-fills
    a dense (buckets, dim) gradient every step, and autograd then adds the two. Here the backward is one
    ``embedding_bag`` over S^T (:func:`transpose_bags`, built once with the vocabulary), with the token
    n-grams index-added into the same gradient: it halves the encoder's forward and backward time on one
    CPU core (45 ms instead of 100 ms for 256 rows of ~30 tokens, 8000 tokens, 2^16 buckets, dim 128).
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor,
                t_index: torch.Tensor, t_offsets: torch.Tensor, t_weights: torch.Tensor, gram_ids: torch.Tensor,
                gram_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(t_index, t_offsets, t_weights, gram_ids, gram_weights)
        chars = F.embedding_bag(index, table, offsets, per_sample_weights=weights, mode="sum")   # (V, dim)
        if gram_ids.shape[1]:
            words = F.embedding_bag(gram_ids, table, per_sample_weights=gram_weights, mode="sum")  # (B, dim)
        else:
            words = table.new_zeros(gram_ids.shape[0], table.shape[1])
        return chars, words

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_chars: torch.Tensor, d_words: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        t_index, t_offsets, t_weights, gram_ids, gram_weights = ctx.saved_tensors
        d_table = F.embedding_bag(t_index, d_chars.contiguous(), t_offsets,
                                  per_sample_weights=t_weights.to(d_chars.dtype), mode="sum")  # (buckets, dim)
        if gram_ids.numel():
            rows = d_words.unsqueeze(1) * gram_weights.unsqueeze(-1).to(d_words.dtype)         # (B, K, dim)
            d_table.index_add_(0, gram_ids.flatten(), rows.flatten(0, 1).to(d_table.dtype))
        return d_table, None, None, None, None, None, None, None, None


# fastText's multiplier for word n-gram hashes (it is < 2^31, and so is every h below: h * P + id fits in
# int64 without overflow, which torch's integer kernels do not define).
NGRAM_PRIME = 116049371
NGRAM_MODULUS = 2**31 - 1  # a Mersenne prime


def token_ngram_hash(grams: torch.Tensor) -> torch.Tensor:
    """(..., n) int64 token ids -> (...,) int64 hashes in [0, 2^31 - 1) of the n-grams.

    h = n; then for each id in order, h = (h * 116049371 + id + 1) mod (2^31 - 1). Starting from n keeps
    n-grams of different lengths apart; ``id + 1`` keeps a leading id 0 from vanishing. A fixed integer
    formula, computed in torch on the whole batch, so it is the same in every process and on every device.
    """
    n = grams.shape[-1]
    h = torch.full(grams.shape[:-1], n, dtype=torch.int64, device=grams.device)
    for k in range(n):  # over the n-gram's length (2..word_ngrams), not over items
        h = torch.remainder(h * NGRAM_PRIME + grams[..., k] + 1, NGRAM_MODULUS)
    return h


# ---------------------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------------------


def check_vocabulary(name: str, input_shape: tuple[int, ...], vocabulary: Sequence[str]) -> None:
    if len(input_shape) != 1 or input_shape[0] < 1:
        raise SelfmetaError(f"encoder {name!r} takes token ids of shape (L,), got items of shape {input_shape}")
    if len(vocabulary) <= SPECIAL_IDS:
        raise SelfmetaError(f"encoder {name!r} needs a vocabulary of [PAD], [UNK], [MASK] and at least one "
                            f"token, got {len(vocabulary)} tokens")


@ENCODERS.register("fasttext")
class FastTextBag(Encoder):
    """A fastText bag of tokens, token n-grams and character n-grams, then LayerNorm.

    A token's vector is its own embedding plus the mean of its character n-grams' (``char_ngrams`` =
    (low, high) characters, see :func:`char_ngrams`; hashed with FNV-1a into ``buckets`` rows). A row's
    features are the mean of its tokens' vectors and of the vectors of its token n-grams of 2 to
    ``word_ngrams`` consecutive tokens (hashed by :func:`token_ngram_hash` into the same ``buckets`` rows, as
    fastText shares one table), padding left out; then LayerNorm and, in training, ``dropout``.

    The character n-gram buckets of every token are computed once, at construction, into buffers that are
    not saved (they follow from the vocabulary and the options); a forward pass computes the (V, dim) token
    vectors in one ``embedding_bag`` and gathers them (:class:`HashedNgrams`), so the character n-grams
    cost the same for every batch, and no Python code runs per item or per token.

    ``buckets`` defaults to 2^16, not fastText's 2M or 2^18: the table is dense and AdamW updates all of
    it every step. At 2^18 x 128 (33.5M parameters) a training step on one CPU core took ~4x as long as
    at 2^16 (8.4M), the optimizer's share dominating. More n-grams share a bucket, the hashing trick's
    price; raise ``buckets`` for a large corpus if the step time allows.

    Shapes: x (B, L') int64 -> (B, dim).
    """

    modalities = ("text",)
    inputs = ("vocabulary",)
    description = "fastText bag (Joulin et al. 2017): mean of token, hashed token n-gram and char n-gram vectors"
    options = {
        "dim": Option("size of the vectors and of the features (fastText: 100)", ge=1),
        "buckets": Option("rows of the hashed n-gram table, shared by token and character n-grams (fastText: 2M, "
                          "updated sparsely; AdamW updates every row each step, so fewer)", ge=1),
        "word_ngrams": Option("longest token n-gram hashed (fastText's -wordNgrams); 1: tokens only", ge=1, le=5),
        "char_ngrams": Option("(low, high) characters of the character n-grams (fastText: 3-6); [0,0]: none",
                              ge=0, le=10, ordered=True),
        "dropout": Option("dropout on the features in training: SimCSE-style noise when > 0", ge=0, lt=1),
    }

    def __init__(self, input_shape: tuple[int, ...], vocabulary: Sequence[str], dim: int = 128,
                 buckets: int = 2**16, word_ngrams: int = 2, char_ngrams: tuple[int, int] = (3, 5),
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_vocabulary("fasttext", input_shape, vocabulary)
        low, high = char_ngrams
        if not (low == high == 0 or 1 <= low <= high):
            raise SelfmetaError(f"encoder 'fasttext' option char_ngrams takes (low, high) with 1 <= low <= high, "
                                f"or (0, 0) for none, got {tuple(char_ngrams)}")
        self.char_ngrams = (low, high)
        self.word_ngrams = word_ngrams
        self.vocab_size = len(vocabulary)  # what token-predicting heads (masked-token reconstruction) predict over
        self.tokens = nn.Embedding(self.vocab_size, dim)
        index, offsets = ngram_table(vocabulary, low, high, buckets)
        self.use_chars = index.numel() > 0
        sizes = torch.diff(offsets, append=offsets.new_tensor([index.numel()]))
        weights = (1.0 / sizes.clamp_min(1).float()).repeat_interleave(sizes)     # a token's mean as a sum
        # Derived from the vocabulary and the options: rebuilt by the constructor, so not in state_dict.
        # S, (V, buckets): token t's bucket ids at ngram_index[ngram_offsets[t]:], weights 1 / their count.
        for name, tensor in zip(("ngram_index", "ngram_offsets", "ngram_weights", "bucket_tokens", "bucket_offsets",
                                 "bucket_weights"), (index, offsets, weights,
                                                     *transpose_bags(index, offsets, weights, buckets))):
            self.register_buffer(name, tensor, persistent=False)
        # Only built when something hashes into it, so that every parameter is used.
        self.buckets = nn.Embedding(buckets, dim) if self.use_chars or word_ngrams > 1 else None
        # The mean of a few hashed vectors has a norm that shrinks with the row's length (~1/sqrt(count)
        # at initialization) and drifts as training moves the table; LayerNorm puts every row's features
        # on one scale, which the projection heads, cosine losses and linear or kNN probes expect.
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.num_features = dim
        # BERT's and GPT-2's init; the LayerNorm makes the features independent of it.
        for table in (self.tokens, self.buckets):
            if table is not None:
                nn.init.normal_(table.weight, std=0.02)

    def hashed_ngrams(self, gram_ids: torch.Tensor, gram_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) bucket ids of token n-grams and their weights -> (V, dim) the mean of each token's character
        n-grams' vectors (zero if it has none), (B, dim) the weighted sum of the token n-grams' vectors."""
        table = self.buckets.weight
        if vmapped(gram_ids):  # torch.func (MAML) differentiates twice, through autograd's own backward
            # embedding_bag has no second derivative: the same sums by an index_add over each n-gram's token.
            counts = torch.diff(self.ngram_offsets, append=self.ngram_offsets.new_tensor([len(self.ngram_index)]))
            owner = torch.repeat_interleave(torch.arange(len(counts), device=table.device), counts)  # (G,)
            rows = table[self.ngram_index] * self.ngram_weights.to(table.dtype).unsqueeze(-1)          # (G, dim)
            chars = rows.new_zeros(len(counts), table.shape[1]).index_add(0, owner, rows)              # (V, dim)
            words = weighted_bag(gram_ids, table, gram_weights)                                        # (B, dim)
            return chars, words
        return HashedNgrams.apply(table, self.ngram_index, self.ngram_offsets, self.ngram_weights.to(table.dtype),
                                  self.bucket_tokens, self.bucket_offsets, self.bucket_weights, gram_ids,
                                  gram_weights.to(table.dtype))

    def ngram_buckets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L') ids -> (B, K) bucket ids of every token n-gram window (2..word_ngrams tokens), and (B, K)
        bool: whether the window holds no padding. Rows are left-aligned, so a window is whole iff its
        last position holds a token. K = 0 when there are none."""
        ids, whole = [x.new_zeros(x.shape[0], 0)], [present_tokens(x[:, :0])]
        for n in range(2, min(self.word_ngrams, x.shape[1]) + 1):
            ids.append(token_ngram_hash(x.unfold(1, n, 1)) % self.buckets.num_embeddings)   # (B, L'-n+1)
            whole.append(present_tokens(x[:, n - 1 :]))
        return torch.cat(ids, 1), torch.cat(whole, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = trim(token_ids(x))
        keep = present_tokens(x)                                                              # (B, L')
        gram_ids, grams = self.ngram_buckets(x)                                               # (B, K)
        count = keep.sum(1, keepdim=True) + grams.sum(1, keepdim=True)                        # (B, 1)
        # The mean as weighted sums (weight 1/count, 0 on padding): no (B, L', dim) tensor is formed.
        vectors, words = self.tokens.weight, None                                             # (V, dim)
        if self.use_chars:
            chars, words = self.hashed_ngrams(gram_ids, grams / count)
            vectors = vectors + chars
        elif grams.shape[1]:
            table = self.buckets.weight
            words = weighted_bag(gram_ids, table, grams / count)
        h = weighted_bag(x, vectors, keep / count)
        if words is not None:
            h = h + words                                                                     # (B, dim)
        return self.dropout(self.norm(h))                                                     # (B, dim)


@ENCODERS.register("transformer")
class TextTransformer(Encoder):
    """Token and learned position embeddings, ``depth`` pre-LN Transformer encoder layers (GELU, MLP of
    4 x ``dim``), a final LayerNorm, the mean over the tokens.

    Padding is hidden from attention (a key padding mask) and left out of the mean, so a row's features do
    not depend on the batch's length ``L'``. ``dropout`` acts on the embeddings, the attention weights and
    the residual branches, as in BERT (not inside the feed-forward block); at 0.1 it is SimCSE's noise.
    2 to 4 layers of width 128 suit a CPU.

    Shapes: x (B, L') int64 -> ``forward_tokens`` (B, L', dim) -> ``forward_features`` (B, dim).
    """

    modalities = ("text",)
    inputs = ("vocabulary",)
    description = "Transformer encoder (pre-LN, learned positions), mean over tokens; dropout = SimCSE noise"
    options = {
        "dim": Option("width of the token states and of the features", ge=1),
        "depth": Option("Transformer layers (2-4 suit a CPU)", ge=1, le=12),
        "heads": Option("attention heads; must divide dim", ge=1),
        "dropout": Option("dropout in training (SimCSE's noise: 0.1)", ge=0, lt=1),
        "length_groups": Option("a batch is run as this many groups of similar length, each cut to its longest "
                                "document (less padding to attend over); 1: the whole batch at once", ge=1),
    }
    mlp_ratio = 4  # the feed-forward width is 4 x dim (Vaswani et al.; BERT)

    def __init__(self, input_shape: tuple[int, ...], vocabulary: Sequence[str], dim: int = 128, depth: int = 2,
                 heads: int = 4, dropout: float = 0.1, length_groups: int = 8) -> None:
        super().__init__()
        check_vocabulary("transformer", input_shape, vocabulary)
        self.length_groups = length_groups
        if dim % heads:
            raise SelfmetaError(f"encoder 'transformer' option heads must divide dim: dim={dim} is not a multiple "
                                f"of heads={heads}")
        self.max_length = input_shape[0]
        self.vocab_size = len(vocabulary)  # what token-predicting heads (masked-token reconstruction) predict over
        self.tokens = nn.Embedding(self.vocab_size, dim)
        self.positions = nn.Embedding(self.max_length, dim)
        nn.init.normal_(self.tokens.weight, std=0.02)     # BERT's and GPT-2's init
        nn.init.normal_(self.positions.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, self.mlp_ratio * dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # No dropout on the feed-forward's hidden units (B, L', 4 dim): BERT, and so SimCSE, has none there,
        # and that mask, 4x the size of the others, was the largest cost of dropout on one CPU core.
        layer.dropout = nn.Identity()
        # Pre-LN leaves the residual stream unnormalized: the final LayerNorm is part of the model. Nested
        # tensors (an eval-mode fast path for padded batches) are off: norm_first layers never take that
        # path, and leaving it on only warns so.
        self.layers = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.num_features = dim

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L') ids -> (B, L', dim): every position's state after the final LayerNorm (padded positions
        hold values too; :func:`present_tokens` says which to use)."""
        x = token_ids(x)
        length = x.shape[1]
        if length > self.max_length:
            raise SelfmetaError(f"text of {length} tokens is longer than the encoder's maximum length "
                                f"{self.max_length}")
        h = self.tokens(x) + self.positions.weight[:length]                                  # (B, L', dim)
        return self.layers(self.dropout(h), src_key_padding_mask=~present_tokens(x))          # (B, L', dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L') ids -> (B, dim). The rows, sorted by length, run in ``length_groups`` groups, each cut to
        its own longest row: attention costs the square of the padded length, and one long message in a
        batch of short ones (SMS: most 10-40 tokens, a few 128) made every row pay for it. A row's features
        do not depend on its group (no batch statistics), so the groups change the cost, not the result."""
        x = token_ids(x)
        if vmapped(x) or self.length_groups == 1:
            return masked_mean(self.forward_tokens(x), present_tokens(x))
        order = torch.argsort(present_tokens(x).sum(1))                                      # short to long
        groups = [trim(x[rows]) for rows in order.tensor_split(min(self.length_groups, len(x)))]
        features = torch.cat([masked_mean(self.forward_tokens(g), present_tokens(g)) for g in groups])
        return features[torch.argsort(order)]                                                 # (B, dim)
