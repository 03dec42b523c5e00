"""Interaction logs: users' items in time order from CSV logs and MovieLens folders, the leave-one-out splits,
the fixed cold-start users, the item vocabulary, the CL4SRec views and the raw items the API takes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from selfmeta.data import load_data
from selfmeta.data.source import detect_format
from selfmeta.data.sources.interactions import user_sets
from selfmeta.errors import SelfmetaError
from selfmeta.modalities import get_modality
from selfmeta.modalities.interactions import (
    MASK,
    PAD,
    UNK,
    InteractionViews,
    ItemVocabulary,
    last_items,
)

COLUMNS = {"user_column": "u", "item_column": "i", "time_column": "t"}


def rows(data) -> dict[str, list[str]]:
    """A loaded split as {user: [item IDs]}."""
    return {str(k): [str(i) for i in r] for k, r in zip(data.keys, data.raw)}


def random_log(path, users: int = 40, items: int = 200, seed: int = 0, repeats: bool = False):
    """A shuffled CSV log of ``users`` users with 1 to 12 interactions each, many timestamps tied; without
    ``repeats`` no user takes an item twice. Returns the DataFrame as written."""
    rng = np.random.default_rng(seed)
    records = []
    for u in range(users):
        n = int(rng.integers(1, 13))
        chosen = rng.choice(items, size=n, replace=repeats)
        times = rng.integers(0, 5, size=n)  # few distinct times: many ties
        records += [(f"user{u}", f"it{c}", int(t)) for c, t in zip(chosen, times)]
    frame = pd.DataFrame(records, columns=["u", "i", "t"]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame.to_csv(path, index=False)
    return frame


def reference_sequences(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Each user's items by time, ties in file order (a stable sort), users with 3+ interactions."""
    out = {}
    for user, group in frame.groupby("u", sort=False):
        ordered = group.sort_values("t", kind="stable")
        if len(ordered) >= 3:
            out[str(user)] = [str(i) for i in ordered["i"]]
    return out


# --- CSV logs ----------------------------------------------------------------------------------------------------

def test_items_in_time_order_ties_in_file_order(tmp_path):
    path = tmp_path / "log.csv"
    # Alice: times 3, 1, 2, 2, 1 -> by time b(1) e(1) c(2) d(2) a(3); ties keep the file order (b before e).
    path.write_text("u,i,t\nalice,a,3\nalice,b,1\nbob,x,10\nalice,c,2\nalice,d,2\nbob,y,5\nalice,e,1\nbob,z,5\n")
    data = load_data(path, "test", **COLUMNS)
    assert data.modality == "interactions" and data.x is None
    assert rows(data) == {"alice": ["b", "e", "c", "d", "a"], "bob": ["y", "z", "x"]}


def test_leave_one_out_against_a_reference(tmp_path):
    path = tmp_path / "log.csv"
    frame = random_log(path)
    expected = reference_sequences(frame)
    splits = {s: load_data(path, s, **COLUMNS) for s in ("train", "val", "test", "all")}
    train, val, test, whole = (rows(splits[s]) for s in ("train", "val", "test", "all"))
    assert test == expected and whole == test
    assert list(splits["all"].keys) == list(splits["test"].keys)
    assert set(train) == set(val) == set(test)
    for user, sequence in test.items():
        assert val[user] == sequence[:-1] and train[user] == val[user][:-1]
        assert len(train[user]) >= 1
        # no repeats in this log: neither target is anywhere in the training row
        assert sequence[-1] not in train[user] and val[user][-1] not in train[user]


def test_users_with_fewer_than_three_interactions_are_dropped_aloud(tmp_path, caplog):
    path = tmp_path / "log.csv"
    frame = random_log(path, users=30, seed=3)
    counts = frame.groupby("u").size()
    short = int((counts < 3).sum())
    assert 0 < short < len(counts)
    with caplog.at_level(logging.WARNING):
        data = load_data(path, "train", **COLUMNS)
    assert len(data) == len(counts) - short
    assert set(data.keys) == set(counts.index[counts >= 3])
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{short} of {len(counts)} users have fewer than 3 interactions" in m for m in messages), messages


def test_no_user_with_three_interactions(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("u,i,t\na,1,1\na,2,2\nb,1,1\n")
    with pytest.raises(SelfmetaError, match="no user has 3 or more interactions"):
        load_data(path, "train", **COLUMNS)


def test_iso_dates_order_interactions(tmp_path):
    path = tmp_path / "dates.csv"
    path.write_text("u,i,t\na,1,2020-03-01\na,2,2020-01-31T10:00:00\na,3,2020-02-01\na,4,2020-01-31\n")
    assert load_data(path, "test", **COLUMNS).raw[0].tolist() == ["4", "2", "3", "1"]
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("u,i,t\na,1,2020-03-01\na,2,5\na,3,2020-02-01\n")
    with pytest.raises(SelfmetaError, match=r"row 1: timestamp column 't' holds '2020-03-01', not a number like"):
        load_data(mixed, "test", **COLUMNS)


def test_bad_logs_are_one_clear_error(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("u,i,t,r\na,1,1,5\na,2,2,4\na,3,yesterday,3\nb,1,1,good\n")
    with pytest.raises(SelfmetaError, match=r"no column 'user'; its columns are: u, i, t, r"):
        load_data(path, "train", user_column="user", item_column="i", time_column="t")
    with pytest.raises(SelfmetaError, match=r"needs --time-column; its columns are: u, i, t, r"):
        load_data(path, "train", user_column="u", item_column="i")
    with pytest.raises(SelfmetaError, match=r"row 3: timestamp column 't' holds 'yesterday', not a number"):
        load_data(path, "train", **COLUMNS)
    with pytest.raises(SelfmetaError, match="--min-rating needs --rating-column"):
        load_data(path, "train", **COLUMNS, min_rating=4)
    good_times = tmp_path / "ratings.csv"
    good_times.write_text("u,i,t,r\na,1,1,5\na,2,2,4\na,3,3,3\nb,1,1,good\n")
    with pytest.raises(SelfmetaError, match=r"row 4: rating column 'r' holds 'good', not a number"):
        load_data(good_times, "train", **COLUMNS, rating_column="r")
    gap = tmp_path / "gap.csv"
    gap.write_text("u,i,t\na,1,1\n,2,2\na,3,3\n")
    with pytest.raises(SelfmetaError, match=r"row 2: no value in column 'u'"):
        load_data(gap, "train", **COLUMNS)
    with pytest.raises(SelfmetaError, match="do not apply to it"):
        load_data(good_times, "train", **COLUMNS, label_column="r")


def test_min_rating_keeps_the_ratings_from_the_threshold(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("u,i,t,r\n" + "".join(f"a,{i},{i},{r}\n" for i, r in enumerate([5, 1, 4, 3, 4.5, 2])) +
                    "b,10,1,1\nb,11,2,2\nb,12,3,5\n")
    data = load_data(path, "test", **COLUMNS, rating_column="r", min_rating=4)
    assert rows(data) == {"a": ["0", "2", "4"]}   # b keeps one rating: dropped
    assert rows(load_data(path, "test", **COLUMNS, rating_column="r")) == {
        "a": ["0", "1", "2", "3", "4", "5"], "b": ["10", "11", "12"]}
    with pytest.raises(SelfmetaError, match="no rating reaches --min-rating 6"):
        load_data(path, "test", **COLUMNS, rating_column="r", min_rating=6)


def test_ids_are_kept_as_written(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("u,i,t\n007,01,1\n007,1,2\n007,001,3\n7,5,1\n7,6,2\n7,8,3\n")
    data = load_data(path, "test", **COLUMNS)
    assert rows(data) == {"007": ["01", "1", "001"], "7": ["5", "6", "8"]}


# --- cold-start users ----------------------------------------------------------------------------------------------

def test_user_sets_are_fixed_disjoint_and_cover_everyone():
    users = np.array([f"user{i}" for i in range(2000)])
    sets = user_sets(users)
    assert np.array_equal(sets, user_sets(users.copy()))                  # deterministic
    assert np.array_equal(user_sets(users[::-1]), sets[::-1])             # by ID, not by position
    assert set(sets) == {"cold", "coldval", "warm"}
    shares = {name: float(np.mean(sets == name)) for name in ("cold", "coldval", "warm")}
    assert 0.06 < shares["cold"] < 0.14 and 0.06 < shares["coldval"] < 0.14 and shares["warm"] > 0.7


def test_cold_and_warm_users_never_meet(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("u,i,t\n" + "".join(f"user{u},{(u * 3 + j) % 17},{j}\n" for u in range(80) for j in range(4)))
    everyone = load_data(path, "train", **COLUMNS)
    parts = {s: load_data(path, "train", **COLUMNS, users=s) for s in ("cold", "coldval", "warm")}
    keys = {s: set(d.keys) for s, d in parts.items()}
    assert all(keys.values())
    assert not keys["cold"] & keys["warm"] and not keys["coldval"] & keys["warm"] and not keys["cold"] & keys["coldval"]
    assert keys["cold"] | keys["coldval"] | keys["warm"] == set(everyone.keys)
    whole = rows(everyone)
    assert all(whole[user] == items for user, items in rows(parts["cold"]).items())
    with pytest.raises(SelfmetaError, match="--users must be one of"):
        load_data(path, "train", **COLUMNS, users="lukewarm")


# --- MovieLens ------------------------------------------------------------------------------------------------------

def fake_movielens(root):
    folder = root / "ml-100k"
    folder.mkdir()
    ratings = [(1, 10, 5, 300), (1, 11, 3, 100), (1, 12, 4, 200), (1, 13, 1, 400),
               (2, 10, 2, 50), (2, 12, 5, 60), (2, 14, 4, 60), (3, 11, 5, 1), (3, 13, 5, 2)]
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    titles = {10: "Toy Story (1995)", 11: "GoldenEye (1995)", 12: "Café au lait (1993)", 13: "Heat (1995)",
              14: "Babe (1995)"}
    (folder / "u.item").write_bytes("".join(f"{i}|{t}|01-Jan-1995||http://x|0|1\n" for i, t in titles.items())
                                    .encode("latin-1"))
    return folder, titles


def test_movielens_folder(tmp_path, caplog):
    folder, titles = fake_movielens(tmp_path)
    assert detect_format(folder) == "movielens" and detect_format(tmp_path) == "movielens"
    with caplog.at_level(logging.WARNING):
        test = load_data(folder, "test")
    assert "1 of 3 users" in caplog.text                                   # user 3 rated two movies
    assert rows(test) == {"1": ["11", "12", "10", "13"], "2": ["10", "12", "14"]}
    assert rows(load_data(tmp_path, "train")) == {"1": ["11", "12"], "2": ["10"]}
    assert rows(load_data(folder, "val")) == {"1": ["11", "12", "10"], "2": ["10", "12"]}
    with pytest.raises(SelfmetaError, match="no user has 3 or more"):
        load_data(folder, "test", min_rating=4)                            # 2, 2 and 2 ratings of 4 or more
    # the titles come with the data, latin-1 read back as written
    assert {item: entry["name"] for item, entry in test.info.items()} == {str(i): t for i, t in titles.items()}


def test_movielens_min_rating(tmp_path):
    folder, _ = fake_movielens(tmp_path)
    with open(folder / "u.data", "a") as f:
        f.write("2\t15\t4\t70\n")
    assert rows(load_data(folder, "test", min_rating=4)) == {"2": ["12", "14", "15"]}


def test_movielens_broken_ratings(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t2\t3\t4\n1\t2\n")
    with pytest.raises(SelfmetaError, match="line 2: not user, item, rating and time"):
        load_data(folder, "train")


# --- the item vocabulary --------------------------------------------------------------------------------------------

RAW = np.empty(4, dtype=object)
RAW[:] = [np.array(["10", "2", "b", "a", "2"]), np.array(["x"]), np.array(["2", "10", "x", "a", "b", "10", "x"]),
          np.array(["a", "b"])]


def test_item_vocabulary_fit_call_and_round_trip():
    vocabulary = ItemVocabulary(max_length=4).fit(RAW)
    assert vocabulary.items == ["2", "10", "a", "b", "x"]                 # natural order: 2 before 10
    assert vocabulary.num_ids == 8 and vocabulary.encoder_inputs()["num_items"] == 8
    ids = {item: 3 + k for k, item in enumerate(vocabulary.items)}
    out = vocabulary(RAW)
    assert out.dtype == torch.int32 and out.shape == (4, 4)
    expected = [[ids[i] for i in list(s)[-4:]] for s in RAW]              # the last 4 items, oldest first
    assert out.tolist() == [e + [PAD] * (4 - len(e)) for e in expected]
    assert [vocabulary.item_id(i) for i in out[0].tolist()] == ["2", "b", "a", "2"]
    # unseen items are [UNK]
    unseen = np.empty(1, dtype=object)
    unseen[0] = np.array(["a", "new", "x"])
    assert vocabulary(unseen).tolist() == [[ids["a"], UNK, ids["x"], PAD]]
    # keep=first: the first 4
    first = ItemVocabulary(max_length=4, keep="first").fit(RAW)
    assert first(RAW)[2].tolist() == [ids["2"], ids["10"], ids["x"], ids["a"]]
    assert first(RAW)[1].tolist() == [ids["x"], PAD, PAD, PAD]
    # the saved form gives the same ids and the same options
    text = vocabulary.to_json()
    again = ItemVocabulary.from_json(text, "items.json")
    assert again.items == vocabulary.items and again.max_length == 4 and again.keep == "last"
    assert torch.equal(again(RAW), out)
    assert ItemVocabulary.from_json(first.to_json(), "f").keep == "first"
    assert json.loads(text)["selfmeta_items"]["max_length"] == 4


def test_item_vocabulary_refuses_bad_options_and_files():
    with pytest.raises(SelfmetaError, match="max_length must be at least 2"):
        ItemVocabulary(max_length=1)
    empty = np.empty(1, dtype=object)
    empty[0] = np.array([], dtype=str)
    with pytest.raises(SelfmetaError, match="no interaction"):
        ItemVocabulary().fit(empty)
    good = json.loads(ItemVocabulary(max_length=5).fit(RAW).to_json())
    for text in ("not json", '{"items": []}', json.dumps({**good, "items": ["a", "a"]}),
                 json.dumps({**good, "items": [1, 2]}), json.dumps({**good, "items": "ab"})):
        with pytest.raises(SelfmetaError, match="saved: not a selfmeta item vocabulary"):
            ItemVocabulary.from_json(text, "saved")
    with pytest.raises(SelfmetaError):
        ItemVocabulary.from_json(json.dumps({**good, "selfmeta_items": {"max_length": 1, "keep": "last"}}), "saved")
    with pytest.raises(SelfmetaError):
        ItemVocabulary.from_json(json.dumps({**good, "selfmeta_items": {"max_length": 5, "keep": "middle"}}), "saved")
    with pytest.raises(SelfmetaError, match="big.json: the saved item vocabulary is larger than 64 MiB"):
        ItemVocabulary.from_json(" " * (64 * 2**20 + 1), "big.json")


# --- the views ------------------------------------------------------------------------------------------------------

def random_rows(b: int = 64, t: int = 12, seed: int = 0) -> torch.Tensor:
    """(b, t) left-aligned rows of 1 to t distinct catalogue ids (3..99), padded with 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(b, t, dtype=torch.long)
    for row in range(b):
        n = int(torch.randint(1, t + 1, (1,), generator=g))
        x[row, :n] = torch.randperm(97, generator=g)[:n] + 3
    return x


def items_of(row: torch.Tensor) -> list[int]:
    return [i for i in row.tolist() if i != PAD]


def width(n: int, fraction: float) -> int:
    return min(max(int(np.floor(fraction * n)), 1), n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_views_stay_left_aligned_nonempty_and_within_the_row(seed):
    torch.manual_seed(seed)
    x = random_rows(seed=seed)
    views = InteractionViews((12,))
    for _ in range(3):
        out = views(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        for row, view in zip(x, out):
            present = (view != PAD).tolist()
            assert present[0] and present == sorted(present, reverse=True), view   # left-aligned, non-empty
            assert set(items_of(view)) <= set(items_of(row)) | {MASK}


@pytest.mark.parametrize("crop", [0.6, 0.2, 1.0])
def test_crop_alone_is_a_contiguous_span_of_the_documented_width(crop):
    torch.manual_seed(1)
    x = random_rows()
    out = InteractionViews((12,), crop=crop, mask=0, reorder=0)(x)
    starts = set()
    for row, view in zip(x, out):
        original, kept = items_of(row), items_of(view)
        assert len(kept) == width(len(original), crop)
        s = original.index(kept[0])
        assert original[s:s + len(kept)] == kept
        starts.add(s)
    assert len(starts) > 1 or crop == 1.0                                  # the span moves


@pytest.mark.parametrize("reorder", [0.6, 1.0])
def test_reorder_alone_shuffles_one_contiguous_span(reorder):
    torch.manual_seed(2)
    x = random_rows()
    out = InteractionViews((12,), crop=0, mask=0, reorder=reorder)(x)
    changed_rows = 0
    for row, view in zip(x, out):
        original, shuffled = row.tolist(), view.tolist()
        assert sorted(original) == sorted(shuffled)                        # the same multiset
        assert (row == PAD).tolist() == (view == PAD).tolist()             # padding untouched
        moved = [p for p, (a, b) in enumerate(zip(original, shuffled)) if a != b]
        if moved:
            changed_rows += 1
            n = len(items_of(row))
            assert moved[-1] - moved[0] + 1 <= width(n, reorder)
            lo, hi = moved[0], moved[-1] + 1
            assert sorted(original[lo:hi]) == sorted(shuffled[lo:hi])
    assert changed_rows > 10


def test_mask_alone_only_hides_items():
    torch.manual_seed(3)
    x = random_rows()
    out = InteractionViews((12,), crop=0, mask=0.5, reorder=0)(x)
    changed = out != x
    assert bool((out[changed] == MASK).all()) and not bool((x[changed] == PAD).any())
    share = float(changed.sum()) / float((x != PAD).sum())
    assert 0.35 < share < 0.65


def test_views_all_off_are_the_identity():
    x = random_rows()
    assert torch.equal(InteractionViews((12,), crop=0, mask=0, reorder=0)(x), x)


def test_last_items_by_hand():
    x = torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0], [3, 4, 5, 6], [0, 0, 0, 0]])
    histories, targets = last_items(x)
    assert targets.tolist() == [7, 8, 6, 0]
    assert histories.tolist() == [[5, 6, 0, 0], [0, 0, 0, 0], [3, 4, 5, 0], [0, 0, 0, 0]]
    assert x.tolist()[0] == [5, 6, 7, 0]                                   # the input is left as it was


# --- what the API takes ---------------------------------------------------------------------------------------------

def test_raw_items_take_lists_of_sequences():
    spec = get_modality("interactions")
    raw = spec.raw_items([["a", "b"], (1, 2, 3), np.array([7])])
    assert raw.dtype == object and len(raw) == 3
    assert [list(r) for r in raw] == [["a", "b"], ["1", "2", "3"], ["7"]]
    for bad, message in (("abc", "single str"), ([], "holds 0 sequence"), ([["a"], []], r"X\[1\] must be a non-empty"),
                         ([["a"], "ab"], r"X\[1\] must be"), (5, "single int")):
        with pytest.raises(SelfmetaError, match=message):
            spec.raw_items(bad)
    with pytest.raises(SelfmetaError, match="not as an array of numbers"):
        spec.from_array(torch.zeros(2, 3))
