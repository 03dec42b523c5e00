"""Time series: the .ts and .tsv readers on files written here, problem folders, long series cut into
windows, the series views, and every bad case as one clear line."""

from __future__ import annotations

import math

import pytest
import torch

from selfmeta.data import load_data
from selfmeta.data.source import detect_format
from selfmeta.errors import SelfmetaError
from selfmeta.modalities import get_modality
from selfmeta.modalities.series import SeriesViews, series_lengths, slice_warp_positions

TS_HEADER = """# a comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down flat
@data
"""


def write_ts(path, rows: list[str], header: str = TS_HEADER):
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def test_ts_multivariate_unequal_lengths_and_missing_values(tmp_path):
    path = write_ts(tmp_path / "toy.ts", ["1,2,3:4,5,6:up", "7,?,9,10:11,12,13,14:down", "1,1:2,2:flat",
                                          "3,2,1:1,2,3:down", "0,0,0,0:1,1,1,1:up"])
    data = load_data(path, "all")
    assert data.modality == "series" and data.x.shape == (5, 2, 4) and data.x.dtype == torch.float32
    assert data.classes == ["up", "down", "flat"]                       # the order @classLabel declares
    assert data.y.tolist() == [0, 1, 2, 1, 0]
    assert data.x[0, 0, :3].tolist() == [1, 2, 3] and math.isnan(data.x[0, 0, 3])    # padded at the end
    assert math.isnan(data.x[1, 0, 1]) and data.x[1, 1].tolist() == [11, 12, 13, 14]  # '?' is missing
    assert series_lengths(data.x).tolist() == [3, 4, 2, 3, 4]


def test_tsv_ucr_2018_layout(tmp_path):
    (tmp_path / "toy.tsv").write_text("2\t0.5\t1.5\t2.5\n1\t1\t2\tNaN\n2\t3\t3\t3\n1\t0\t0\t0\n1\t5\t4\t3\n")
    data = load_data(tmp_path / "toy.tsv", "all")
    assert data.x.shape == (5, 1, 3) and data.classes == ["1", "2"] and data.y.tolist() == [1, 0, 1, 0, 0]
    assert math.isnan(data.x[1, 0, 2])


def test_a_problem_folder_has_its_own_splits(tmp_path):
    folder = tmp_path / "Toy"
    folder.mkdir()
    write_ts(folder / "Toy_TRAIN.ts", ["1,2,3:4,5,6:up", "3,2,1:1,2,3:down"])
    write_ts(folder / "Toy_TEST.ts", ["1,2,3,4,5:1,1,1,1,1:flat", "0,0:0,0:up", "5,5,5:5,5,5:down"])
    assert detect_format(folder) == "ucr"
    train, test, every = (load_data(folder, s) for s in ("train", "test", "all"))
    assert len(train) == 2 and len(test) == 3 and len(every) == 5
    assert train.classes == test.classes == ["up", "down", "flat"]     # one class list for both files
    assert every.x.shape == (5, 2, 5)                                   # padded to the longest of both files
    assert test.y.tolist() == [2, 0, 1]


@pytest.mark.parametrize("rows, message", [
    (["1,2:3,4:up", "1,2:up"], "1 dimensions, but the first series has 2"),
    (["1,2:3,4:up", "1,x:3,4:up"], "'x' is not a number"),
    (["1,2:3,4:sideways"], "label 'sideways' is not declared in @classLabel (up down flat)"),
    (["1,2,3:3,4:up"], "the dimensions of one series differ in length (3, 2)"),
    (["1,inf:3,4:up"], "an infinite value"),
])
def test_bad_ts_files(tmp_path, rows, message):
    with pytest.raises(SelfmetaError) as info:
        load_data(write_ts(tmp_path / "bad.ts", rows), "all")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_ts_without_data_section_or_with_wrong_dimensions(tmp_path):
    with pytest.raises(SelfmetaError, match="no @data line"):
        load_data(write_ts(tmp_path / "a.ts", [], header="@problemName x\n"), "all")
    with pytest.raises(SelfmetaError, match="@dimensions 3, but the series have 2"):
        load_data(write_ts(tmp_path / "b.ts", ["1,2:3,4:up"], header=TS_HEADER.replace("@dimensions 2", "@dimensions 3")), "all")


def test_lengths_too_unequal_to_pad_are_refused(tmp_path):
    rows = [",".join(["1"] * 5000) + ":" + ",".join(["1"] * 5000) + ":up"] + ["1:1:down"] * 2000
    with pytest.raises(SelfmetaError, match="padding them to one length would take more than 16 times"):
        load_data(write_ts(tmp_path / "skew.ts", rows), "all")


def write_long_csv(path, steps: int = 100, channels: int = 2):
    rows = ["timestamp," + ",".join(f"v{c}" for c in range(channels))]
    rows += [f"2020-01-01 {i // 60:02d}:{i % 60:02d}," + ",".join(f"{i + 100 * c}" for c in range(channels))
             for i in range(steps)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_timestamped_csv_is_one_long_series_cut_into_windows(tmp_path):
    path = write_long_csv(tmp_path / "machine.csv")
    assert detect_format(path) == "windows"                            # not taken for a table
    every = load_data(path, "all", window=10, stride=5)
    assert every.x.shape == (19, 2, 10) and every.y is None
    assert every.x[1, 0].tolist() == list(range(5, 15)) and every.x[1, 1, 0] == 105
    train, test = load_data(path, "train", window=10, stride=5), load_data(path, "test", window=10, stride=5)
    assert len(train) + len(test) == 19 and torch.equal(test.x, every.x[len(train):])   # the test split is the end
    with pytest.raises(SelfmetaError, match="give --window"):
        load_data(path, "all")
    with pytest.raises(SelfmetaError, match="--window 500 is longer than the series \\(100 steps\\)"):
        load_data(path, "all", window=500)
    with pytest.raises(SelfmetaError, match="--window does not apply to digits data; it is for windows data"):
        load_data("digits", "all", window=5)


# --- views ---------------------------------------------------------------------------------------------------

def series_batch(n=6, c=2, t=40, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, t, generator=g).cumsum(-1)
    x[0, :, 25:] = float("nan")                                         # a shorter series
    return x


def views(**options) -> SeriesViews:
    x = series_batch()
    modality = get_modality("series")
    return modality.build_views((2, 40), modality.normalizer(x), options)


OFF = dict(crop=[1.0, 1.0], time_warp=0.0, scaling=0.0, magnitude_warp=0.0, jitter=0.0, mask=0.0)


def test_views_keep_shape_and_each_series_length():
    torch.manual_seed(0)
    x = series_batch()
    out = views()(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert series_lengths(out).tolist() == series_lengths(x).tolist()   # padding stays padding
    assert torch.isnan(out[0, :, 25:]).all() and torch.isfinite(out[1:]).all()


def test_everything_off_is_the_identity():
    x = series_batch()
    assert torch.equal(torch.nan_to_num(views(**OFF)(x), 99.0), torch.nan_to_num(x, 99.0))


def test_each_view_does_what_it_says():
    x = series_batch()[1:]
    torch.manual_seed(1)
    jittered = views(**{**OFF, "jitter": 0.5})(x) - x
    std = get_modality("series").normalizer(series_batch()).std.view(1, 2, 1)
    assert torch.allclose((jittered / std).std(), torch.tensor(0.5), rtol=0.1)
    scaled = views(**{**OFF, "scaling": 0.3})(x) / x                   # one gain per item and channel
    assert torch.allclose(scaled, scaled[..., :1].expand_as(scaled), rtol=1e-4)
    masked = views(**{**OFF, "mask": 0.3})(x)
    hidden = torch.isnan(masked).all(1).float().mean()                 # whole steps, all channels
    assert 0.2 < hidden < 0.4
    cropped = views(**{**OFF, "crop": [0.5, 0.5]})(x)
    assert not torch.allclose(cropped, x) and cropped.min() >= x.min() - 1e-5 and cropped.max() <= x.max() + 1e-5


def test_window_and_warp_positions_stay_inside_each_series_and_keep_order():
    torch.manual_seed(0)
    lengths = torch.tensor([40, 12, 2])
    positions = slice_warp_positions(lengths, 40, (0.3, 0.9), 0.5, torch.zeros(1))
    steps = (positions + 1) / 2 * 39                                   # back to steps of the padded length
    for i, n in enumerate(lengths.tolist()):
        inside = steps[i, :n]
        assert inside.min() >= -1e-4 and inside.max() <= n - 1 + 1e-4
        assert (inside[1:] >= inside[:-1] - 1e-5).all()                # monotone: time is not reversed


def test_views_are_seeded_by_the_global_generator():
    x = series_batch()
    v = views()
    torch.manual_seed(3)
    a = v(x)
    torch.manual_seed(3)
    assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(v(x)))
