"""The record modality: the column plan (quantiles, category vocabularies, tokenizer, images), its saved form,
the layout's missing values, the views, the fusion encoder, and the cross-modal and masked-column losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfmeta.data.records import RecordTable
from selfmeta.encoders import build_encoder
from selfmeta.encoders.record import Layout
from selfmeta.errors import SelfmetaError
from selfmeta.methods.maskedcolumns import hide_columns
from selfmeta.modalities import get_modality
from selfmeta.modalities.record import ColumnPlan, quantile_scale
from selfmeta.objectives import clip_loss


def table(tmp_path=None, n: int = 8) -> RecordTable:
    rng = np.random.default_rng(0)
    price = rng.normal(size=n) * 10
    price[1] = np.nan
    colour = np.array(["red", None, "blue", "red", "green", "red", "blue", "red"][:n], dtype=object)
    review = np.array(["lovely soft dress", "too small", None, "", "fits well, lovely", "soft", "small", "dress"][:n],
                      dtype=object)
    columns = {"price": price, "colour": colour, "review": review}
    kinds = {"price": "number", "colour": "category", "review": "text"}
    if tmp_path is not None:
        photo = np.empty(n, dtype=object)
        for i in range(n):
            if i != 3:
                path = tmp_path / f"{i}.png"
                Image.fromarray(np.full((5, 7, 3), 20 * i, dtype=np.uint8)).save(path)
                photo[i] = str(path)
        columns["photo"], kinds["photo"] = photo, "image"
    return RecordTable(columns, kinds)


def fitted(raw: RecordTable, **options) -> ColumnPlan:
    return ColumnPlan(vocab_size=40, max_length=6, min_frequency=1, image_size=4, **options).fit(raw)


def test_quantile_scale_matches_scikit_learn():
    from sklearn.preprocessing import QuantileTransformer

    rng = np.random.default_rng(1)
    train = np.concatenate([rng.exponential(size=500), np.full(200, 1.0), np.full(50, 0.0)])  # heavy tail, ties
    new = np.concatenate([rng.exponential(size=100), [1.0, 0.0, -5.0, 100.0]])
    quantiles = np.quantile(train, np.linspace(0, 1, 101))
    ours = quantile_scale(new, quantiles)
    reference = QuantileTransformer(n_quantiles=101, subsample=10**9).fit(train[:, None]).transform(new[:, None])[:, 0]
    np.testing.assert_allclose(ours, (reference - 0.5) * math.sqrt(12), atol=1e-5)
    assert np.isnan(quantile_scale(np.array([np.nan]), quantiles)).all()
    assert abs(quantile_scale(train, quantiles).std() - 1) < 0.1


def test_column_plan_packs_each_kind(tmp_path):
    raw = table(tmp_path)
    plan = fitted(raw)
    x = plan(raw)
    columns = plan.columns
    assert [c["kind"] for c in columns] == ["number", "category", "text", "image"]
    assert x.shape == (8, 1 + 1 + 6 + 3 * 16) and x.dtype == torch.float32
    assert math.isnan(x[1, 0]) and not torch.isnan(x[[0, 2], 0]).any()
    # Categories: 0 missing, then the vocabulary most frequent first (red x4, blue x2, green x1).
    assert plan.categories["colour"] == ["red", "blue", "green"]
    assert x[:, 1].tolist() == [2, 0, 3, 2, 4, 2, 3, 2]
    # Text: a missing review is all padding, an empty one a single [UNK].
    text = x[:, 2:8]
    assert (text[2] == 0).all() and text[3].tolist() == [1, 0, 0, 0, 0, 0]
    assert (text[0] > 2).sum() >= 3
    # Images: resized RGB in [0, 1], NaN where missing.
    pixels = x[:, 8:].view(8, 3, 4, 4)
    assert torch.isnan(pixels[3]).all() and torch.allclose(pixels[5], torch.full((3, 4, 4), 100 / 255))
    # A category never seen in training goes to the unknown bucket.
    new = RecordTable({"price": np.array([1.0]), "colour": np.array(["purple"], dtype=object),
                       "review": np.array(["dress"], dtype=object), "photo": np.array([None], dtype=object)},
                      dict(raw.kinds))
    assert plan(new)[0, 1] == 1


def test_rare_categories_share_the_unknown_bucket():
    plan = fitted(table(), min_count=2)
    assert plan.categories["colour"] == ["red", "blue"]
    assert plan(table())[4, 1] == 1  # green (once) is unknown


def test_saved_plan_prepares_the_same_items(tmp_path):
    raw = table(tmp_path)
    plan = fitted(raw)
    again = ColumnPlan.from_json(plan.to_json(), "columns.json")
    assert torch.equal(again(raw).nan_to_num(-9), plan(raw).nan_to_num(-9))
    assert again.encoder_inputs() == plan.encoder_inputs()


def test_a_different_plan_is_refused():
    plan = fitted(table())
    other = RecordTable({"price": np.zeros(2), "colour": np.array(["a", "b"], dtype=object)},
                        {"price": "number", "colour": "text"})
    with pytest.raises(SelfmetaError, match=r"the data's columns \(price:number, colour:text\) are not the run's"):
        plan(other)


@pytest.mark.parametrize("text", ["{", '{"selfmeta_columns": {}}', '{"selfmeta_columns": {"vocab_size": "x"}}'])
def test_a_broken_saved_plan_is_one_error(text):
    with pytest.raises(SelfmetaError, match="columns.json"):
        ColumnPlan.from_json(text, "columns.json")


def test_an_unreadable_image_is_one_error_naming_it(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    raw = RecordTable({"photo": np.array([str(bad)], dtype=object)}, {"photo": "image"})
    with pytest.raises(SelfmetaError, match="bad.png: cannot read the image"):
        fitted(raw)(raw)


def test_layout_present_and_hide_match_a_loop(tmp_path):
    raw = table(tmp_path)
    plan = fitted(raw)
    x, layout = plan(raw), Layout(plan.columns)
    present = layout.present(x)
    for i in range(len(raw)):
        for k, name in enumerate(raw.columns):
            assert bool(present[i, k]) == (not raw.missing(name)[i]), (i, name)
    hidden = torch.rand(present.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    out = layout.hide(x, hidden)
    assert torch.equal(layout.present(out), present & ~hidden)
    for i in range(len(raw)):
        for k, column in enumerate(plan.columns):
            at = slice(column["offset"], column["offset"] + column["size"])
            expected = x[i, at] if not hidden[i, k] else torch.full_like(x[i, at], layout.fill[column["offset"]])
            torch.testing.assert_close(out[i, at], expected, equal_nan=True)


def test_views_keep_the_layout_and_a_column_per_record(tmp_path):
    raw = table(tmp_path)
    plan = fitted(raw)
    x = plan(raw)
    views = get_modality("record").build_views(tuple(x.shape[1:]), None, {"drop": 0.9}, plan.encoder_inputs())
    layout = views.layout
    torch.manual_seed(0)
    for _ in range(20):
        v = views(x)
        assert v.shape == x.shape
        assert layout.present(v).any(1).all()                                 # one column kept per record
        ids = v[:, 2:8]
        assert ((ids == ids.round()) & (ids >= 0)).all()                      # token ids stay ids
        pixels = v[:, 8:][torch.isfinite(v[:, 8])]
        assert ((pixels >= 0) & (pixels <= 1)).all()


def test_fusion_encoder_uses_the_missing_token_and_gives_parts(tmp_path):
    raw = table(tmp_path)
    plan = fitted(raw)
    x = plan(raw)
    for fusion in ("attention", "concat"):
        torch.manual_seed(0)
        encoder = build_encoder("fusion", tuple(x.shape[1:]), "record", plan.encoder_inputs(), fusion=fusion).eval()
        features = encoder.forward_features(x)
        assert features.shape == (8, encoder.num_features) and torch.isfinite(features).all()
        assert encoder.parts == ("number", "category", "text", "image")
        assert encoder.forward_part(x, "text").shape == (8, encoder.dim)
        # A hidden column is its missing token whatever the value was: records equal elsewhere embed equally.
        layout = Layout(plan.columns)
        twin = x.clone()
        twin[0, 0] = 123.0
        hide_price = torch.zeros(8, 4, dtype=torch.bool)
        hide_price[:, 0] = True
        torch.testing.assert_close(encoder.forward_features(layout.hide(twin, hide_price)),
                                   encoder.forward_features(layout.hide(x, hide_price)))
        with pytest.raises(SelfmetaError, match="no 'audio' part"):
            encoder.forward_part(x, "audio")


def naive_clip(za, zb, scale, valid):
    """CLIP's loss one anchor at a time over the valid records."""
    idx = [i for i in range(len(za)) if valid[i]]
    u, v = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    total = 0.0
    for i in idx:
        a = torch.stack([scale * u[i] @ v[j] for j in idx])
        b = torch.stack([scale * v[i] @ u[j] for j in idx])
        pos = idx.index(i)
        total = total + 0.5 * (-torch.log_softmax(a, 0)[pos] - torch.log_softmax(b, 0)[pos])
    return total / len(idx)


def test_clip_loss_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    za, zb = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    valid = torch.tensor([True, True, False, True, True, False, True])
    scale = torch.tensor(14.3)
    torch.testing.assert_close(clip_loss(za, zb, scale, valid), naive_clip(za, zb, scale, valid))
    torch.testing.assert_close(clip_loss(za, zb, scale), naive_clip(za, zb, scale, [True] * 7))
    # Two processes: each rank's rows against the gathered batch give the full loss on average.
    halves = [clip_loss(za[s], zb[s], scale, valid[s], za, zb, valid, offset=s.start)
              for s in (slice(0, 4), slice(4, 7))]
    full = naive_clip(za, zb, scale, valid)
    counts = [int(valid[:4].sum()), int(valid[4:].sum())]
    torch.testing.assert_close((halves[0] * counts[0] + halves[1] * counts[1]) / sum(counts), full)
    zero = clip_loss(za.requires_grad_(), zb, scale, torch.zeros(7, dtype=torch.bool))
    zero.backward()
    assert float(zero.detach()) == 0.0 and za.grad is not None


def test_hide_columns_counts():
    present = torch.tensor([[True, True, True, True], [True, False, False, False], [True, True, False, False]])
    torch.manual_seed(0)
    for _ in range(10):
        hidden = hide_columns(present, 0.3)
        assert hidden.sum(1).tolist() == [2, 0, 1]
        assert not (hidden & ~present).any()


def test_crossmodal_pairs_the_text_with_the_rest_and_can_add_per_record_views(tmp_path):
    from selfmeta.data.dataset import Dataset
    from selfmeta.engine.config import TrainConfig
    from selfmeta.engine.model import build_method, fit_preprocessor

    data = fit_preprocessor(TrainConfig(input_options={"vocab_size": 40, "max_length": 6, "image_size": 4}),
                            Dataset(None, None, [], "record", "t", raw=table(tmp_path)))
    x = data.take(torch.arange(8))
    for within, keys in ((0.0, {"pos_sim", "temperature", "valid"}),
                         (1.0, {"pos_sim", "temperature", "valid", "within_pos_sim", "crossmodal"})):
        torch.manual_seed(0)
        method = build_method(TrainConfig(method="crossmodal", encoder="fusion", view_options={"drop": 0.0},
                                          method_options={"within": within}), data)
        out = method(x, torch.arange(8))
        assert set(out.logs) == keys and torch.isfinite(out.loss)
        # Rows 2 (no review) and 3 (only an empty one, which is present) : only row 2 lacks a side.
        assert out.logs["valid"] == pytest.approx(7 / 8)
    with pytest.raises(SelfmetaError, match="needs columns on both sides"):
        build_method(TrainConfig(method="crossmodal", encoder="fusion",
                                 method_options={"group": "number,category,text,image"}), data)
