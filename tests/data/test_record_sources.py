"""Record tables from CSV, TSV, Parquet and JSON Lines files and table folders: the ``--columns`` plan, kind
inference, missing values, image paths (files and zip members), and each bad input as one clear line. Every file
is written in tmp_path, except the Women's Clothing E-Commerce Reviews test at the end, which reads
../shared/data and skips with a reason where it is absent."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import shared
from selfmeta.data import load_data
from selfmeta.data.records import ZIP_MEMBER, RecordTable
from selfmeta.data.sources.records import infer_kind, parse_columns
from selfmeta.errors import SelfmetaError

LONG = "this dress fits well and the colour is lovely"  # long enough to be text


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (255, 0, 0)).save(path)
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def mixed_csv(folder: Path, rows: int = 10) -> Path:
    """A table of every kind: a number, a short category, a long text, an image path, and a label."""
    for i in range(rows):
        png(folder / "img" / f"{i}.png")
    lines = ["age,size,review,photo,label"]
    for i in range(rows):
        lines.append(f"{20 + i},{'SML'[i % 3]},\"{LONG}, number {i}\",img/{i}.png,{'ab'[i % 2]}")
    return write(folder / "t.csv", "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------- parse_columns


def test_parse_columns():
    assert parse_columns(None) is None
    assert parse_columns("Review Text:text, Age:number,Department Name:category") == [
        ("Review Text", "text"), ("Age", "number"), ("Department Name", "category")]
    # Repeated flag (a list) is joined; no colon or "auto" infers; the LAST colon separates the kind.
    assert parse_columns(["a:b:text", "Size, ratio:x:auto", "Kind:IMAGE"]) == [
        ("a:b", "text"), ("Size", "auto"), ("ratio:x", "auto"), ("Kind", "image")]


@pytest.mark.parametrize("spec, match", [
    ("Age:numbr", r"unknown kind 'numbr' in 'Age:numbr'; valid: number, category, text, image, auto"),
    ("ratio:x", "unknown kind 'x'"),
    ("Age:number,,Size", "an empty entry"),
    (":text", "no column name in ':text'"),
    (["Age", "Size,Age:number"], "'Age' given twice"),
    ([], "names no column"),
])
def test_parse_columns_refuses(spec, match):
    with pytest.raises(SelfmetaError, match=match) as info:
        parse_columns(spec)
    one_line(info)


# ----------------------------------------------------------------------------------------- inference


@pytest.mark.parametrize("cells, kind", [
    (["1", "2.5", None, "-3e2"], "number"),
    ([1, 2.5, None], "number"),
    (["true", "false", "true"], "category"),
    (["a.PNG", "b/c.jpg ", None, "d.tiff"], "image"),
    (["a.png", "notes"], "category"),
    (["red", "green", "blue"], "category"),
    (["x" * 40, "y" * 25], "text"),                       # mean length 32.5 >= 30
    (["a b c d e", "f g h i j"], "text"),                 # mean 5 words
    (["a b c d", "e f g h"], "category"),                 # short and 4 words
])
def test_infer_kind(cells, kind):
    assert infer_kind(cells, "c", "t.csv") == kind


def test_infer_kind_without_values():
    with pytest.raises(SelfmetaError, match="column 'c' has no values; drop it from --columns"):
        infer_kind([None, None], "c", "t.csv")


def test_every_kind_inferred_from_a_csv(tmp_path):
    path = mixed_csv(tmp_path)
    full = load_data(path, "all", columns=["age,size", "review:auto,photo"])
    assert full.modality == "record" and full.x is None and isinstance(full.raw, RecordTable)
    assert full.raw.plan == [("age", "number"), ("size", "category"), ("review", "text"), ("photo", "image")]
    assert full.raw.columns["age"].dtype == np.float64 and full.raw.columns["age"].tolist() == list(range(20, 30))
    assert full.raw.columns["size"].tolist()[:3] == ["S", "M", "L"]
    assert full.raw.columns["review"][0] == f"{LONG}, number 0"
    assert full.raw.columns["photo"][3] == str((tmp_path / "img" / "3.png").resolve())
    assert full.classes == ["a", "b"] and full.y.tolist() == [0, 1] * 5
    # Without --columns, a table with a string column is records of every column but the label.
    inferred = load_data(path, "all")
    assert inferred.modality == "record" and inferred.raw.plan == full.raw.plan
    # The fixed stratified split works on records.
    train, test = load_data(path, "train", columns=["age"]), load_data(path, "test", columns=["age"])
    assert (len(train), len(test)) == (8, 2) and torch.bincount(test.y).tolist() == [1, 1]
    together = sorted(train.raw.columns["age"].tolist() + test.raw.columns["age"].tolist())
    assert together == full.raw.columns["age"].tolist()


def test_declared_kinds_override_and_only_named_columns(tmp_path):
    path = mixed_csv(tmp_path)
    ds = load_data(path, "all", columns=["review:category,age:category, size:text"])
    assert ds.raw.plan == [("review", "category"), ("age", "category"), ("size", "text")]
    assert ds.raw.columns["age"].tolist()[:2] == ["20", "21"]                  # as written, strings
    assert "photo" not in ds.raw.columns
    # "label" stays the label; naming it in --columns, or naming a column that is not there, is an error.
    with pytest.raises(SelfmetaError, match="'label' is both the label column and one of --columns"):
        load_data(path, "all", columns=["age,label"], label_column="label")
    with pytest.raises(SelfmetaError, match=r"no column 'Age'; columns: age, size, review, photo, label") as info:
        load_data(path, "all", columns=["Age:number"])
    one_line(info)
    with pytest.raises(SelfmetaError, match="--columns and --text-column do not go together"):
        load_data(path, "all", columns=["age"], text_column="review")


def test_names_with_spaces_and_colons(tmp_path):
    path = write(tmp_path / "t.csv", "Review Text,ratio:x,label\n"
                                     f"\"{LONG}\",1,a\nshort,2,b\n\"{LONG}\",3,a\nok,4,b\n\"{LONG}\",5,a\n")
    ds = load_data(path, "all", columns=["Review Text:text,ratio:x:number"])
    assert ds.raw.plan == [("Review Text", "text"), ("ratio:x", "number")]


def test_missing_values_per_kind(tmp_path):
    png(tmp_path / "a.png")
    path = write(tmp_path / "t.csv", "n,c,t,i,label\n"
                                     f"1,x,\"{LONG}\",a.png,p\n"
                                     f",,\"{LONG}\",,q\n"
                                     f"3,y,,a.png,p\n"
                                     f"NA,z,NA,a.png,q\n")
    ds = load_data(path, "all", columns=["n:category,c:category,t:text,i:image"])
    assert ds.raw.columns["n"].tolist() == ["1", None, "3", "NA"]          # only an empty field is missing
    ds = load_data(path, "all", columns=["c:category,t:text,i:image"])
    assert ds.raw.columns["c"].tolist() == ["x", None, "y", "z"]
    assert ds.raw.columns["t"].tolist() == [LONG, LONG, None, "NA"]        # a missing text stays None, not ""
    assert ds.raw.columns["i"].tolist()[1] is None
    assert ds.raw.missing("t").tolist() == [False, False, True, False]
    path = write(tmp_path / "n.csv", "n,c,label\n1,x,p\n,y,q\n2.5,,p\n")
    ds = load_data(path, "all", columns=["n:number,c"])
    n = ds.raw.columns["n"]
    assert n.dtype == np.float64 and n[0] == 1 and np.isnan(n[1]) and n[2] == 2.5


@pytest.mark.parametrize("value", ["abc", "inf", "nan", "1_000"])
def test_number_column_refuses_a_non_number(tmp_path, value):
    path = write(tmp_path / "t.csv", f"n,c,label\n1,x,p\n2,y,q\n{value},z,p\n")
    with pytest.raises(SelfmetaError, match=f"t.csv, row 3: column 'n'.*'{value}'") as info:
        load_data(path, "all", columns=["n:number,c"])
    one_line(info)


def test_a_record_with_no_value_is_refused(tmp_path):
    path = write(tmp_path / "t.csv", "n,c,label\n1,x,p\n2,,q\n,,p\n,,q\n")
    with pytest.raises(SelfmetaError, match=r"t.csv, row 3: the record has no value in any of its columns "
                                            r"\(n, c\); 2 such rows") as info:
        load_data(path, "all", columns=["n,c"])
    one_line(info)


def test_a_column_with_no_value_is_refused(tmp_path):
    path = write(tmp_path / "t.csv", "n,e,label\n1,,p\n2,,q\n")
    with pytest.raises(SelfmetaError, match="column 'e' has no values; drop it from --columns"):
        load_data(path, "all", columns=["n,e"])
    with pytest.raises(SelfmetaError, match="column 'e' has no values; drop it from --columns"):
        load_data(path, "all", columns=["n,e:category"])


def test_missing_labels_are_refused(tmp_path):
    path = write(tmp_path / "t.csv", "n,label\n1,p\n2,\n")
    with pytest.raises(SelfmetaError, match="'label' has missing values"):
        load_data(path, "all", columns=["n"])


# ------------------------------------------------------------------------------------ numeric tables


def test_numeric_table_stays_a_table(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,label\n1,2.5,x\n3,4,y\n5,6,x\n7,8,y\n9,10,x\n")
    ds = load_data(path, "all")
    assert ds.modality == "table" and ds.x.dtype == torch.float32 and ds.x.shape == (5, 2)
    # Naming the columns makes it records, numbers all the same.
    ds = load_data(path, "all", columns=["a,b"])
    assert ds.modality == "record" and ds.raw.plan == [("a", "number"), ("b", "number")]


def test_parquet_and_jsonl_records(tmp_path):
    frame = pd.DataFrame({"n": [1.0, None, 3.0, 4.0], "flag": [True, False, True, False],
                          "c": ["u", None, "v", "u"], "label": ["p", "q", "p", "q"]})
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    ds = load_data(tmp_path / "t.parquet", "all")
    assert ds.modality == "record" and ds.raw.plan == [("n", "number"), ("flag", "category"), ("c", "category")]
    assert np.isnan(ds.raw.columns["n"][1]) and ds.raw.columns["flag"].tolist() == ["true", "false"] * 2
    assert ds.raw.columns["c"].tolist() == ["u", None, "v", "u"]
    rows = [{"n": 1, "c": "u", "label": "p"}, {"c": "v", "label": "q"}, {"n": 2.5, "c": None, "label": "p"}]
    write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_data(tmp_path / "t.jsonl", "all", columns=["c,n"])
    assert ds.raw.plan == [("c", "category"), ("n", "number")]
    assert ds.raw.columns["c"].tolist() == ["u", "v", None] and np.isnan(ds.raw.columns["n"][1])


def test_tsv_records(tmp_path):
    path = write(tmp_path / "t.tsv", "n\tc\tlabel\n1\tx\tp\n2\ty\tq\n")
    assert load_data(path, "all").raw.plan == [("n", "number"), ("c", "category")]


# ------------------------------------------------------------------------------------------- images


def image_table(folder: Path, path: str) -> Path:
    png(folder / "ok.png")
    return write(folder / "t.csv", f"photo,label\nok.png,p\n{path},q\n")


def test_relative_image_path(tmp_path):
    png(tmp_path / "sub" / "b.png")
    ds = load_data(image_table(tmp_path, "sub/../sub/b.png"), "all", columns=["photo"])
    assert ds.raw.plan == [("photo", "image")]
    assert ds.raw.columns["photo"].tolist() == [str((tmp_path / p).resolve()) for p in ("ok.png", "sub/b.png")]


@pytest.mark.parametrize("value, match", [
    ("../out.png", "leaves the table's folder"),
    ("/etc/x.png", "is an absolute path"),
    ("nope.png", "does not exist"),
    ("link.png", "leaves the table's folder"),
])
def test_bad_image_paths(tmp_path, value, match):
    folder = tmp_path / "data"
    folder.mkdir()
    png(tmp_path / "out.png")
    os.symlink(tmp_path / "out.png", folder / "link.png")  # inside the folder, pointing out of it
    with pytest.raises(SelfmetaError, match=f"t.csv, row 2: column 'photo': image '{value}' {match}") as info:
        load_data(image_table(folder, value), "all", columns=["photo:image"])
    one_line(info)


def test_zip_members(tmp_path):
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        png(tmp_path / "tmp.png")
        archive.write(tmp_path / "tmp.png", "cat/1.png")
    ds = load_data(image_table(tmp_path, "images.zip/cat/1.png"), "all", columns=["photo"])
    location = ds.raw.columns["photo"][1]
    assert location == f"{(tmp_path / 'images.zip').resolve()}{ZIP_MEMBER}cat/1.png"
    with pytest.raises(SelfmetaError, match=r"row 2: column 'photo': image 'images.zip/cat/2.png' is not in "
                                            r"images.zip") as info:
        load_data(image_table(tmp_path, "images.zip/cat/2.png"), "all", columns=["photo"])
    one_line(info)


# -------------------------------------------------------------------------------------- table folder


def test_table_folder_records(tmp_path):
    write(tmp_path / "train.csv", "n,c,t,label\n1,x,\"a b c d e f\",p\n2,y,,q\n3,x,\"g h i j k l\",p\n")
    write(tmp_path / "test.csv", "n,c,t,label\n4,z,short,q\n,w,,p\n")
    train, test = load_data(tmp_path, "train"), load_data(tmp_path, "test")
    full = load_data(tmp_path, "all")
    # The kinds are the train file's ("t" is short in test, text all the same); all is train then test.
    assert train.modality == test.modality == full.modality == "record"
    assert train.raw.plan == test.raw.plan == full.raw.plan == [("n", "number"), ("c", "category"), ("t", "text")]
    assert (len(train), len(test), len(full)) == (3, 2, 5)
    assert full.raw.columns["c"].tolist() == ["x", "y", "x", "z", "w"]
    assert full.raw.columns["t"].tolist() == ["a b c d e f", None, "g h i j k l", "short", None]
    assert full.classes == ["p", "q"] and full.y.tolist() == [0, 1, 0, 1, 0]
    ds = load_data(tmp_path, "all", columns=["c,n:category"])
    assert ds.raw.plan == [("c", "category"), ("n", "category")] and ds.raw.columns["n"][4] is None
    write(tmp_path / "test.csv", "n,label\n4,q\n")
    with pytest.raises(SelfmetaError, match=r"test.csv: no column 'c'"):
        load_data(tmp_path, "all", columns=["n,c"])


# --------------------------------------------------------------------------------------------- CLI


def test_the_cli_flag_reaches_the_source(tmp_path):
    from selfmeta.cli import _load, build_parser

    path = mixed_csv(tmp_path)
    args = build_parser().parse_args(["embed", "run", "--data", str(path), "--out", "f.npy",
                                      "--columns", "age:category,size", "--columns", "review:text"])
    ds = _load(args)
    assert ds.raw.plan == [("age", "category"), ("size", "category"), ("review", "text")]
    args = build_parser().parse_args(["embed", "run", "--data", "digits", "--out", "f.npy", "--columns", "a"])
    with pytest.raises(SelfmetaError, match="--columns does not apply to digits data"):
        _load(args)


# -------------------------------------------------------------------------------------- shared data


CLOTHING = "womens-clothing-reviews/Womens Clothing E-Commerce Reviews.csv"
CLOTHING_COLUMNS = ["Title:text,Review Text:text,Age:number,Rating:number,Positive Feedback Count:number,"
                    "Division Name:category,Class Name:category"]


def test_womens_clothing_reviews():
    path = shared(CLOTHING)
    # 14 rows have no Department Name (nor Division or Class Name): as a label it is refused, by name.
    with pytest.raises(SelfmetaError, match=r"the label column 'Department Name' has missing values "
                                            r"\(14, the first in row 9445\)"):
        load_data(path, "all", columns=CLOTHING_COLUMNS, label_column="Department Name")
    ds = load_data(path, "all", columns=CLOTHING_COLUMNS, label_column="Recommended IND")
    assert ds.modality == "record" and len(ds) == 23486 and ds.classes == ["0", "1"]
    assert ds.raw.plan == [("Title", "text"), ("Review Text", "text"), ("Age", "number"), ("Rating", "number"),
                           ("Positive Feedback Count", "number"), ("Division Name", "category"),
                           ("Class Name", "category")]
    assert int(ds.raw.missing("Review Text").sum()) == 845 and int(ds.raw.missing("Title").sum()) == 3810
    assert int(ds.raw.missing("Division Name").sum()) == 14 and not ds.raw.missing("Age").any()


def test_short_phrases_that_rarely_repeat_are_text_and_repeated_ones_categories():
    from selfmeta.data.sources.records import infer_kind

    titles = [f"love this {w} top" if i % 2 else f"runs small {i}" for i, w in enumerate(["blue", "red"] * 15)]
    assert infer_kind(titles, "Title", "t.csv") == "text"
    assert infer_kind(["General Petite", "General"] * 15, "Division", "t.csv") == "category"
    assert infer_kind([f"id{i}" for i in range(30)], "code", "t.csv") == "category"  # distinct but no spaces
