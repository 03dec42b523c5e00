"""Side information of interactions: what the source knows of each item (names, categories) reaches the
item vocabulary, is saved with it, and changes the encoder's item embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfmeta.encoders import build_encoder
from selfmeta.errors import SelfmetaError
from selfmeta.modalities.interactions import FIRST_ITEM, ItemVocabulary

RAW = np.empty(3, dtype=object)
RAW[:] = [np.array(["1", "2", "3"]), np.array(["2", "3", "4"]), np.array(["4", "1", "2"])]
INFO = {"1": {"name": "Toy Story (1995)", "categories": ["Animation", "Comedy"]},
        "2": {"name": "Toy Soldiers (1991)", "categories": ["Action"]},
        "3": {"name": "Heat (1995)", "categories": ["Action", "Crime"]}}   # item 4 undescribed


def test_side_information_is_learned_saved_and_restored():
    vocabulary = ItemVocabulary(max_length=8, side=True).fit(RAW, info=INFO)
    side = vocabulary.side_inputs()
    assert side["names"].shape == (FIRST_ITEM + 4, 16) and side["categories"].shape == (FIRST_ITEM + 4, 4)
    # categories sorted: Action, Animation, Comedy, Crime
    assert side["categories"][FIRST_ITEM].tolist() == [0, 1, 1, 0]
    assert side["categories"][FIRST_ITEM + 3].sum() == 0 and (side["names"][FIRST_ITEM + 3] == 0).all()
    assert (side["names"][:FIRST_ITEM] == 0).all() and (side["names"][FIRST_ITEM] != 0).any()
    again = ItemVocabulary.from_json(vocabulary.to_json(), "saved")
    restored = again.side_inputs()
    assert torch.equal(restored["names"], side["names"]) and torch.equal(restored["categories"], side["categories"])


def test_side_off_or_without_info_gives_none():
    assert ItemVocabulary(side=False).fit(RAW, info=INFO).side_inputs() is None
    assert ItemVocabulary(side=True).fit(RAW).side_inputs() is None
    assert ItemVocabulary(side=True).fit(RAW).encoder_inputs()["side"] is None


def test_encoder_item_embeddings_share_words_and_categories():
    vocabulary = ItemVocabulary(max_length=8, side=True).fit(RAW, info=INFO)
    torch.manual_seed(0)
    encoder = build_encoder("sasrec", (8,), "interactions", vocabulary.encoder_inputs(), dim=8, depth=1, heads=1)
    with torch.no_grad():
        encoder.items.weight.zero_()                       # what is left comes from the side information
        table = encoder.item_embeddings()
    assert table[FIRST_ITEM + 3].abs().sum() == 0          # undescribed: nothing to borrow
    assert table[FIRST_ITEM].abs().sum() > 0
    # gradients reach the category table through the scores
    x = vocabulary(RAW).long()
    encoder.scores(encoder.forward_features(x)).masked_fill(torch.arange(FIRST_ITEM + 4) < FIRST_ITEM, 0).sum().backward()
    assert encoder.category_table.weight.grad.abs().sum() > 0 and encoder.name_words.weight.grad.abs().sum() > 0


def test_corrupt_side_information_is_refused():
    saved = ItemVocabulary(max_length=8, side=True).fit(RAW, info=INFO).to_json()
    broken = saved.replace('"categories": [[', '"categories": [7, [', 1)
    with pytest.raises(SelfmetaError, match="not a selfmeta item vocabulary"):
        ItemVocabulary.from_json(broken, "items.json")


def test_recommender_learns_from_item_info_and_keeps_it_when_saved(tmp_path):
    from selfmeta.api import Recommender

    sequences = [list(s) for s in RAW] * 4
    rec = Recommender(epochs=2, time_budget=None, item_info=INFO, encoder_options={"dim": 8, "depth": 1, "heads": 1})
    rec.fit(sequences)
    assert rec.backbone_.encoder.side and rec.backbone_.encoder.categories.shape == (FIRST_ITEM + 4, 4)
    rec.save(tmp_path / "rec.safetensors")
    again = Recommender.load(tmp_path / "rec.safetensors")
    assert again.backbone_.encoder.side
    assert np.array_equal(again.recommend(sequences[:2], k=2)[0], rec.recommend(sequences[:2], k=2)[0])
    assert not Recommender(epochs=1, time_budget=None).fit(sequences).backbone_.encoder.side
    with pytest.raises(SelfmetaError, match="item_info must be a dict"):
        Recommender(epochs=1, time_budget=None, item_info=["x"]).fit(sequences)
