"""Text sources: label<TAB>text lines, folders of .txt files, text columns of CSV/TSV/Parquet/JSON Lines tables
and train/test table folders, each bad input as one clear line. Every file is written in tmp_path, except the
SMS Spam Collection test at the end, which reads ../shared/data and skips with a reason where it is absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from selfmeta.data import load_data
from selfmeta.data.source import detect_format
from selfmeta.errors import SelfmetaError

from conftest import shared


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# -------------------------------------------------------------------------------------------- lines


LINES = ("ham\thello there\nspam\tWIN a prize\tnow\n\nham\t\nham\tsee you\r\nspam\tcall 0800\n"
         + "ham\tok\n" * 5 + "spam\tfree\n" * 3)


def test_lines_labels_documents_and_split(tmp_path):
    path = write(tmp_path / "corpus", LINES)
    assert detect_format(path) == "lines"
    full = load_data(path, "all")
    assert full.modality == "text" and full.x is None and full.raw.dtype == object
    assert full.classes == ["ham", "spam"]
    # The blank line is skipped; the text after the first tab is kept whole, an empty one as "".
    assert full.raw.tolist()[:5] == ["hello there", "WIN a prize\tnow", "", "see you", "call 0800"]
    names = ["ham", "spam", "ham", "ham", "spam"] + ["ham"] * 5 + ["spam"] * 3
    assert [full.classes[i] for i in full.y.tolist()] == names
    train, test = load_data(path, "train"), load_data(path, "test")
    assert (len(train), len(test)) == (10, 3)
    assert torch.bincount(test.y).tolist() == [2, 1]                       # stratified: 20% of 8 ham, of 5 spam
    assert sorted(train.raw.tolist() + test.raw.tolist()) == sorted(full.raw.tolist())


def test_lines_detection(tmp_path):
    assert detect_format(write(tmp_path / "sms.txt", LINES)) == "lines"
    # Not label<TAB>text: plain prose, a label too long to be one, numbers only, a binary file.
    for name, content in [("notes.txt", "hello\nworld\n"),
                          ("long.txt", "this is a whole sentence, not a short label\tand more\n"),
                          ("numbers", "1\t0.5\t1.5\n2\t3\tNaN\n"),
                          ("blob", b"a\tb\0c\n")]:
        path = write(tmp_path / name, content)
        with pytest.raises(SelfmetaError, match="cannot tell the data format"):
            detect_format(path)


def test_lines_without_tab(tmp_path):
    path = write(tmp_path / "corpus.txt", "ham\tfine\nspam\talso fine\n\n" + "ham\tok\n" * 5 + "no tab here\n")
    with pytest.raises(SelfmetaError) as info:
        load_data(path, "all")
    assert one_line(info).startswith(f"{path}, line 9: no tab")
    # Among the first lines it is no longer this layout, unless the format is named.
    path = write(tmp_path / "early.txt", "ham\tfine\nno tab\n")
    with pytest.raises(SelfmetaError, match="cannot tell the data format"):
        load_data(path, "all")
    with pytest.raises(SelfmetaError, match=", line 2: no tab"):
        load_data(path, "all", format="lines")
    with pytest.raises(SelfmetaError, match=", line 1: no label before the tab"):
        load_data(write(tmp_path / "nolabel.txt", " \ttext\n"), "all", format="lines")


def test_lines_invalid_utf8(tmp_path):
    path = write(tmp_path / "corpus.txt", b"ham\tfine\nspam\tok\nham\tcaf\xe9\n")
    with pytest.raises(SelfmetaError) as info:
        load_data(path, "all")
    assert one_line(info).startswith(f"{path}, line 3: not valid UTF-8 (byte 0xe9)")


def test_lines_empty_corpus_and_empty_split(tmp_path):
    empty = write(tmp_path / "empty.txt", "\n\n")
    with pytest.raises(SelfmetaError, match="no documents") as info:
        load_data(empty, "all", format="lines")
    assert str(empty) in one_line(info)
    single = write(tmp_path / "single", "ham\tjust one\n")
    with pytest.raises(SelfmetaError) as info:
        load_data(single, "test")
    assert one_line(info).startswith(f"{single}: the test split is empty")


# ----------------------------------------------------------------------------------- text columns


def reviews() -> pd.DataFrame:
    return pd.DataFrame({
        "id": range(10),
        "title": ["Great", None, "Bad", "OK", None, "Fine", "Meh", "Nice", "Poor", "007"],
        "body": ["loved it", "no title", None, "so so", None, "fits", "hmm", "good", "broke", "NA"],
        "label": ["pos", "pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg", "pos"],
    })


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        with open(path, "w", encoding="utf-8") as handle:
            for record in frame.to_dict("records"):
                handle.write(json.dumps({k: v for k, v in record.items() if v is not None}) + "\n")
    return path


@pytest.fixture(params=["csv", "tsv", "parquet", "jsonl"])
def ext(request):
    return request.param


def test_text_columns(tmp_path, ext):
    path = write_frame(reviews(), tmp_path / f"reviews.{ext}")
    assert detect_format(path) == ext
    full = load_data(path, "all", text_column=["title", "body"])
    assert full.modality == "text" and full.x is None
    # Joined with a newline, missing values skipped, a row with none kept as ""; "007" and "NA" as written.
    assert full.raw.tolist() == ["Great\nloved it", "no title", "Bad", "OK\nso so", "", "Fine\nfits", "Meh\nhmm",
                                 "Nice\ngood", "Poor\nbroke", "007\nNA"]
    assert full.classes == ["neg", "pos"]                                  # the "label" column, by default
    assert [full.classes[i] for i in full.y.tolist()] == reviews()["label"].tolist()
    assert load_data(path, "all", text_column="body").raw.tolist()[:3] == ["loved it", "no title", ""]
    train, test = load_data(path, "train", text_column=["body"]), load_data(path, "test", text_column=["body"])
    assert (len(train), len(test)) == (8, 2) and torch.bincount(test.y).tolist() == [1, 1]


def test_text_columns_label_column_option(tmp_path, ext):
    frame = reviews().rename(columns={"label": "sentiment"})
    path = write_frame(frame, tmp_path / f"reviews.{ext}")
    assert load_data(path, "all", text_column=["body"]).y is None           # no label column found: unlabeled
    labelled = load_data(path, "all", text_column=["body"], label_column="sentiment")
    assert [labelled.classes[i] for i in labelled.y.tolist()] == frame["sentiment"].tolist()


def test_missing_text_column(tmp_path, ext):
    path = write_frame(reviews(), tmp_path / f"reviews.{ext}")
    with pytest.raises(SelfmetaError) as info:
        load_data(path, "all", text_column=["body", "review"])
    message = one_line(info)
    assert message.startswith(f"{path}: no text column 'review'; columns: ")
    for column in ("id", "title", "body", "label"):
        assert column in message


def test_text_label_column_with_missing_values(tmp_path, ext):
    frame = reviews()
    frame.loc[6, "label"] = None
    path = write_frame(frame, tmp_path / f"reviews.{ext}")
    with pytest.raises(SelfmetaError) as info:
        load_data(path, "all", text_column=["body"])
    assert one_line(info).startswith(f"{path}: the label column 'label' has missing values (1, the first in row 7)")


def test_text_table_empty(tmp_path):
    path = write(tmp_path / "empty.csv", "body,label\n")
    with pytest.raises(SelfmetaError) as info:
        load_data(path, "all", text_column=["body"])
    assert one_line(info) == f"{path}: no documents"
    single = write(tmp_path / "single.csv", "body,label\nhello,a\n")
    with pytest.raises(SelfmetaError) as info:
        load_data(single, "test", text_column=["body"])
    assert one_line(info).startswith(f"{single}: the test split is empty")


@pytest.mark.parametrize("suffix, content, line", [
    (".csv", b"body,label\nfine,a\n\"two\nlines \xff\",b\n", 4),   # the line in the file, not the row
    (".tsv", b"body\tlabel\nfine\ta\nbad \xc3\tb\n", 3),
    (".jsonl", b'{"body": "fine"}\n\n{"body": "caf\xe9"}\n', 3),
])
def test_table_invalid_utf8(tmp_path, suffix, content, line):
    path = write(tmp_path / f"t{suffix}", content)
    with pytest.raises(SelfmetaError) as info:
        load_data(path, "all", text_column=["body"])
    assert one_line(info).startswith(f"{path}, line {line}: not valid UTF-8")


def test_parquet_text_bytes_and_invalid_utf8(tmp_path):
    frame = pd.DataFrame({"body": [b"caf\xc3\xa9", b"ok", None], "label": ["a", "b", "a"]})
    path = write_frame(frame, tmp_path / "t.parquet")
    assert load_data(path, "all", text_column=["body"]).raw.tolist() == ["café", "ok", ""]
    frame.loc[1, "body"] = b"bad \xff"
    path = write_frame(frame, tmp_path / "bad.parquet")
    with pytest.raises(SelfmetaError) as info:
        load_data(path, "all", text_column=["body"])
    assert one_line(info) == f"{path}, row 2: column 'body' is not valid UTF-8"


def test_jsonl_bad_lines(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"body": "fine"}\n{"body": oops}\n')
    with pytest.raises(SelfmetaError) as info:
        load_data(path, "all", text_column=["body"])
    assert one_line(info).startswith(f"{path}, line 2: not JSON")
    path = write(tmp_path / "list.jsonl", '{"body": "fine"}\n["body"]\n')
    with pytest.raises(SelfmetaError, match="line 2: expected one JSON object a line, found list"):
        load_data(path, "all", text_column=["body"])


def test_tsv_keeps_quotes(tmp_path):
    # TSV has no quoting: a quote is text, and one line is one row.
    path = write(tmp_path / "t.tsv", 'body\tlabel\n"quoted start\ta\nplain "inner" quotes\tb\n')
    assert load_data(path, "all", text_column=["body"]).raw.tolist() == ['"quoted start', 'plain "inner" quotes']


def test_text_column_refused_elsewhere(tmp_path):
    path = write(tmp_path / "corpus", LINES)
    with pytest.raises(SelfmetaError, match="--text-column does not apply to lines data; it is for csv, jsonl"):
        load_data(path, "all", text_column=["body"])


# ------------------------------------------------------------------------ numeric tables and series stay


def numbers() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"f1": rng.normal(size=10), "f2": np.arange(10), "label": ["x", "y"] * 5})


def test_numeric_tables_without_text_column(tmp_path, ext):
    path = write_frame(numbers(), tmp_path / f"t.{ext}")
    data = load_data(path, "all")
    assert data.modality == "table" and data.x.shape == (10, 2) and data.classes == ["x", "y"]
    assert np.allclose(data.x.numpy(), numbers()[["f1", "f2"]].to_numpy(), atol=1e-6)


def test_tsv_series_and_tables_told_apart(tmp_path):
    ucr = write(tmp_path / "toy.tsv", "2\t0.5\t1.5\t2.5\n1\t1\t2\tNaN\n2\t3\t3\t3\n1\t0\t0\t0\n1\t5\t4\t3\n")
    assert detect_format(ucr) == "ts"
    series = load_data(ucr, "all")
    assert series.modality == "series" and series.x.shape == (5, 1, 3)
    table = write(tmp_path / "table.tsv", "label\tf1\tf2\n2\t0.5\t1.5\n1\t1\t2\n")
    assert detect_format(table) == "tsv"
    assert load_data(table, "all").x.shape == (2, 2)


# ---------------------------------------------------------------------------------- train/test tables


def test_table_folder_text(tmp_path, ext):
    frame = reviews()
    write_frame(frame.iloc[:6], tmp_path / f"train.{ext}")
    write_frame(frame.iloc[6:].assign(label=["neg", "pos", "neg", "meh"]), tmp_path / f"test.{ext}")
    assert detect_format(tmp_path) == "tablefolder"
    train = load_data(tmp_path, "train", text_column=["body"])
    test = load_data(tmp_path, "test", text_column=["body"])
    full = load_data(tmp_path, "all", text_column=["body"])
    assert train.classes == test.classes == full.classes == ["meh", "neg", "pos"]   # from both files
    assert (len(train), len(test), len(full)) == (6, 4, 10)
    assert test.raw.tolist() == ["hmm", "good", "broke", "NA"]
    assert [test.classes[i] for i in test.y.tolist()] == ["neg", "pos", "neg", "meh"]
    assert full.raw.tolist() == train.raw.tolist() + test.raw.tolist()


def test_table_folder_numeric(tmp_path):
    write_frame(numbers().iloc[:7], tmp_path / "train.csv")
    write_frame(numbers().iloc[7:].assign(label="z"), tmp_path / "test.csv")
    train, test, full = (load_data(tmp_path, s) for s in ("train", "test", "all"))
    assert train.modality == "table" and (train.x.shape, test.x.shape, full.x.shape) == ((7, 2), (3, 2), (10, 2))
    assert train.classes == test.classes == ["x", "y", "z"] and test.y.tolist() == [2, 2, 2]
    write_frame(numbers().iloc[7:].rename(columns={"f2": "g2"}), tmp_path / "test.csv")
    with pytest.raises(SelfmetaError, match="have different feature columns"):
        load_data(tmp_path, "train")


def test_table_folder_empty_split(tmp_path):
    write_frame(reviews(), tmp_path / "train.jsonl")
    write(tmp_path / "test.jsonl", "\n")
    with pytest.raises(SelfmetaError) as info:
        load_data(tmp_path, "test", text_column=["body"])
    assert one_line(info) == f"{tmp_path / 'test.jsonl'}: no rows"


# --------------------------------------------------------------------------------------- text folders


def test_text_folder_fixed_split(tmp_path):
    for i in range(5):
        write(tmp_path / "sport" / f"{i}.txt", f"match report {i}")
        write(tmp_path / "tech" / f"{i}.txt", f"new phone {i}" if i else "")
    write(tmp_path / "README", "ignored: next to the class folders")
    assert detect_format(tmp_path) == "textfolder"
    full = load_data(tmp_path, "all")
    assert full.modality == "text" and full.classes == ["sport", "tech"] and len(full) == 10
    assert full.raw.tolist()[5:7] == ["", "new phone 1"]                   # an empty file is an empty document
    train, test = load_data(tmp_path, "train"), load_data(tmp_path, "test")
    assert (len(train), len(test)) == (8, 2) and torch.bincount(test.y).tolist() == [1, 1]


def test_text_folder_own_splits(tmp_path):
    write(tmp_path / "train" / "neg" / "a.txt", "awful")
    write(tmp_path / "train" / "pos" / "b.txt", "great")
    write(tmp_path / "train" / "urls.txt", "ignored: beside the class folders")
    write(tmp_path / "test" / "pos" / "c.txt", "superb")
    train, test, full = (load_data(tmp_path, s) for s in ("train", "test", "all"))
    assert train.classes == test.classes == ["neg", "pos"]
    assert train.raw.tolist() == ["awful", "great"] and test.raw.tolist() == ["superb"] and test.y.tolist() == [1]
    assert len(full) == 3
    (tmp_path / "test" / "pos" / "c.txt").unlink()
    with pytest.raises(SelfmetaError) as info:
        load_data(tmp_path, "test")
    assert one_line(info) == f"{tmp_path}: the test split holds no documents"


def test_text_folder_bad_input(tmp_path):
    write(tmp_path / "a" / "1.txt", "fine\nstill fine\nbroken \xff here".encode("latin-1"))
    with pytest.raises(SelfmetaError) as info:
        load_data(tmp_path, "all")
    assert one_line(info).startswith(f"{tmp_path / 'a' / '1.txt'}, line 3: not valid UTF-8")
    write(tmp_path / "a" / "1.txt", "fine")
    write(tmp_path / "a" / "notes.md", "not a document")
    assert detect_format(tmp_path) == "imagefolder"                       # not a text folder: other files
    with pytest.raises(SelfmetaError, match="expected <class>/<doc>.txt, found a/notes.md"):
        load_data(tmp_path, "all", format="textfolder")
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(SelfmetaError, match="no documents"):
        load_data(empty, "all", format="textfolder")


def test_image_folder_is_not_a_text_folder(tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):
        for i in range(3):
            (tmp_path / name).mkdir(exist_ok=True)
            Image.new("L", (4, 4), 40 * i).save(tmp_path / name / f"{i}.png")
    assert detect_format(tmp_path) == "imagefolder"


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.shared_data
def test_real_sms_spam():
    path = shared("sms-spam/SMSSpamCollection")
    assert detect_format(path) == "lines"
    full = load_data(path, "all")
    assert len(full) == 5574 and full.classes == ["ham", "spam"]
    assert torch.bincount(full.y).tolist() == [4827, 747]
    train, test = load_data(path, "train"), load_data(path, "test")
    assert (len(train), len(test)) == (4460, 1114)
    assert torch.bincount(test.y).tolist() == [965, 149]
    assert full.raw[1] == "Ok lar... Joking wif u oni..."
