"""Records through the command line as a user types it: a product table with a number, a category, a text and
an image column; pretrain, evaluate (linear, tip, finetune), embed a part; the run keeps its column plan."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from selfmeta.cli import main
from selfmeta.data import load_data
from selfmeta.engine.model import load_backbone
from selfmeta.modalities.record import ColumnPlan

COLUMNS = "price:number,colour:category,description:text,photo:image"


def write_products(folder, n: int = 48, seed: int = 0) -> None:
    """Two classes of products: shoes (dark photos, "leather" words, higher prices) and hats; some values missing."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        shoe = i % 2 == 0
        photo = f"img/{i}.png"
        shade = 40 if shoe else 210
        Image.fromarray(np.clip(rng.normal(shade, 20, (12, 12, 3)), 0, 255).astype(np.uint8)).save(folder / photo)
        words = ["leather", "sole", "lace", "heel"] if shoe else ["brim", "wool", "cap", "sun"]
        rows.append({
            "price": "" if i % 7 == 3 else round(float(rng.normal(80 if shoe else 20, 5)), 2),
            "colour": "" if i % 5 == 1 else rng.choice(["black", "brown", "red"]),
            "description": "" if i % 6 == 2 else " ".join(rng.choice(words, 6)),
            "photo": "" if i % 9 == 4 else photo,
            "label": "shoe" if shoe else "hat",
        })
    pd.DataFrame(rows).to_csv(folder / "products.csv", index=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("products")
    write_products(folder)
    run = folder / "run"
    assert main(["pretrain", "--data", str(folder / "products.csv"), "--columns", COLUMNS, "--method", "simclr",
                 "--out", str(run), "--steps", "6", "--no-progress", "batch_size=16", "input.image_size=8",
                 "input.vocab_size=40", "input.max_length=8"]) == 0
    return folder, run


def test_the_run_keeps_its_column_plan(trained):
    folder, run = trained
    plan = ColumnPlan.from_json((run / "columns.json").read_text(), "columns.json")
    assert plan.plan == [("price", "number"), ("colour", "category"), ("description", "text"), ("photo", "image")]
    assert plan.image_size == 8 and set(plan.categories["colour"]) == {"black", "brown", "red"}
    _, description = load_backbone(run)
    assert json.loads(description["preprocessor"])["plan"] == [list(p) for p in plan.plan]  # the weights carry it


def test_evaluate_and_embed_parts(trained, tmp_path, capsys):
    folder, run = trained
    data = ["--data", str(folder / "products.csv"), "--columns", COLUMNS]
    for protocol in ("linear", "tip"):
        assert main(["evaluate", str(run), *data, "--protocol", protocol, "--labels-per-class", "3",
                     "--seeds", "2"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["protocol"] == protocol and 0 <= result["f1_macro"] <= 1
    assert main(["evaluate", str(run), *data, "--label-column", "label", "--protocol", "cluster"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["topics"]) == 2  # clusters named by the words of the records' text columns
    assert main(["evaluate", str(run), *data, "--protocol", "finetune", "--labels-per-class", "3", "--seeds", "1",
                 "steps=3"]) == 0
    capsys.readouterr()
    fused, text = tmp_path / "fused.npy", tmp_path / "text.npy"
    assert main(["embed", str(run), *data, "--out", str(fused)]) == 0
    assert main(["embed", str(run), *data, "--part", "text", "--out", str(text)]) == 0
    assert np.load(fused).shape == (48, 64) and np.load(text).shape == (48, 64)
    assert main(["embed", str(run), *data, "--part", "audio", "--out", str(text)]) == 2
    assert "error: --part audio: the model's encoder has the parts number, category, text, image" in \
        capsys.readouterr().err


def test_a_different_plan_or_bad_path_is_one_error_line(trained, tmp_path, capsys):
    folder, run = trained
    other = "price:number,colour:text,description:text,photo:image"
    assert main(["embed", str(run), "--data", str(folder / "products.csv"), "--columns", other,
                 "--out", str(tmp_path / "f.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the data's columns (") and "give the same --columns as at training" in err
    assert err.count("\n") == 1 and not (tmp_path / "f.npy").exists()
    frame = pd.read_csv(folder / "products.csv")
    frame.loc[3, "photo"] = "../outside.png"
    frame.to_csv(folder / "bad.csv", index=False)  # beside the images: only row 4 leaves the folder
    assert main(["embed", str(run), "--data", str(folder / "bad.csv"), "--columns", COLUMNS,
                 "--out", str(tmp_path / "g.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "../outside.png" in err and err.count("\n") == 1


def test_new_categories_at_evaluation_go_to_the_unknown_bucket(trained, tmp_path):
    folder, run = trained
    frame = pd.read_csv(folder / "products.csv")
    frame["colour"] = "turquoise"
    frame.to_csv(folder / "new.csv", index=False)
    data = load_data(folder / "new.csv", "all", columns=[COLUMNS])
    from selfmeta.engine.model import check_compatible

    _, description = load_backbone(run)
    prepared = check_compatible(description, data)
    assert (prepared.x[:, 1] == 1).all()  # every colour unknown, none an error
