"""Text through every door: the command line (pretrain, evaluate, topics, embed, metatrain), the API, the
run's own tokenizer reused by every later command, bad input, and a short run on SMS spam against TF-IDF
(shared data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import shared
from selfmeta import FewShotLearner, SelfSupervised
from selfmeta.cli import main
from selfmeta.data import load_data
from selfmeta.engine.model import check_compatible, embed, load_backbone
from selfmeta.errors import SelfmetaError
from selfmeta.modalities.text import Tokenizer

TOPICS = {
    "spam": "free prize win cash now call txt claim offer winner urgent reply stop mobile".split(),
    "chat": "see you later home tonight lol ok dinner love mum sorry going meet tomorrow".split(),
    "work": "meeting report deadline office project client email manager review budget team slides".split(),
}


def corpus(n_per_class: int = 40, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short documents of 4 to 12 words, most from their class's words, some shared ones."""
    rng = np.random.default_rng(seed)
    shared_words = "the a to and is at on for".split()
    docs, labels = [], []
    for label, words in TOPICS.items():
        for _ in range(n_per_class):
            n = rng.integers(4, 13)
            picks = [rng.choice(words) if rng.random() < 0.7 else rng.choice(shared_words) for _ in range(n)]
            docs.append(" ".join(picks))
            labels.append(label)
    return docs, labels


def write_csv(path, docs, labels):
    import pandas as pd

    pd.DataFrame({"id": range(len(docs)), "text": docs, "label": labels}).to_csv(path, index=False)
    return path


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A short SimCLR run on a CSV of three kinds of messages; its folder and the CSV."""
    folder = tmp_path_factory.mktemp("text")
    data = write_csv(folder / "messages.csv", *corpus())
    run = folder / "run"
    assert main(["pretrain", "--data", str(data), "--text-column", "text", "--label-column", "label", "--out", str(run),
                 "--steps", "30", "--no-progress", "input.vocab_size=200", "input.max_length=16",
                 "encoder.dim=32"]) == 0
    return run, data


def test_pretrain_saves_the_tokenizer_the_weights_carry(text_run):
    run, _ = text_run
    saved = Tokenizer.from_json((run / "tokenizer.json").read_text(), "tokenizer.json")
    _, description = load_backbone(run)
    assert description["modality"] == "text" and description["input_shape"] == [16]
    assert saved.to_json() == Tokenizer.from_json(description["preprocessor"], "weights").to_json()
    assert saved.max_length == 16 and len(saved.vocabulary) <= 200


def test_later_commands_use_the_runs_own_tokenizer(text_run, tmp_path, capsys):
    run, _ = text_run
    # New text with words the run never saw: tokenized by the run's tokenizer (unknown pieces), not a new one.
    docs = ["zebra quantum free prize", "see you at home", "xylophone meeting report"]
    data = write_csv(tmp_path / "new.csv", docs, ["spam", "chat", "work"])
    assert main(["embed", str(run), "--data", str(data), "--text-column", "text", "--out", str(tmp_path / "f.npy")]) == 0
    features = np.load(tmp_path / "f.npy")
    tokenizer = Tokenizer.from_json((run / "tokenizer.json").read_text(), "saved")
    ids = tokenizer(np.array(docs, dtype=object))
    backbone, _ = load_backbone(run)
    with torch.no_grad():
        expected = backbone(ids.long()).numpy()
    assert features.shape == (3, 32) and np.allclose(features, expected, atol=1e-5)   # --split all: file order
    assert int((ids == 1).sum()) > 0                            # [UNK]: "zebra" is no word of the run's corpus


def test_evaluate_linear_cluster_topics_and_fewshot(text_run, tmp_path, capsys):
    run, data = text_run
    flags = ["--data", str(data), "--text-column", "text", "--label-column", "label"]
    assert main(["evaluate", str(run), *flags, "--protocol", "linear", "--labels-per-class", "5"]) == 0
    assert last_json(capsys)["accuracy"] > 0.6                  # 3 classes: chance is 0.33
    assert main(["evaluate", str(run), *flags, "--protocol", "cluster"]) == 0
    result = last_json(capsys)
    assert len(result["topics"]) == 3 and all(t["words"] for t in result["topics"])
    assert main(["evaluate", str(run), *flags, "--protocol", "fewshot", "--ways", "3", "--shots", "1", "--queries",
                 "3", "--episodes", "20"]) == 0
    assert last_json(capsys)["accuracy"] > 0.4
    out = tmp_path / "topics.json"
    assert main(["topics", str(run), "--data", str(data), "--text-column", "text", "--clusters", "3",
                 "--out", str(out), "--examples", "2"]) == 0
    topics = json.loads(out.read_text())
    assert sum(t["size"] for t in topics["topics"]) == 120 and all(len(t["examples"]) == 2 for t in topics["topics"])
    words = {w for t in topics["topics"] for w in t["words"][:3]}
    assert words & set(TOPICS["spam"]) and words & set(TOPICS["work"])
    assert "nmi" in topics["against_labels"]


@pytest.mark.parametrize("method,tasks", [("protonet", "labels"), ("protonet", "umtra"), ("maml", "labels")])
def test_metatrain_on_text(tmp_path, capsys, method, tasks):
    data = write_csv(tmp_path / "m.csv", *corpus(20))
    assert main(["metatrain", "--data", str(data), "--text-column", "text", "--label-column", "label", "--tasks", tasks,
                 "--method", method,
                 "--ways", "3", "--shots", "1", "--queries", "2", "--tasks-per-step", "4", "--steps", "3",
                 "--out", str(tmp_path / "run"), "--no-progress", "input.vocab_size=100", "encoder.dim=16"]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(data), "--text-column", "text", "--label-column",
                 "label", "--protocol", "fewshot", "--ways", "3", "--shots", "1", "--queries", "2", "--episodes", "5"]) == 0
    assert 0 <= last_json(capsys)["accuracy"] <= 1


def test_bad_text_input_is_one_error_line(text_run, tmp_path, capsys):
    run, data = text_run
    table = tmp_path / "numbers.csv"
    table.write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n9,1,x\n")
    cases = [
        (["pretrain", "--data", str(data), "--text-column", "body", "--out", str(tmp_path / "r")], "no text column 'body'"),
        (["pretrain", "--data", str(data), "--text-column", "text", "--out", str(tmp_path / "r"), "--steps", "1",
          "input.vocab_size=2"], "input.vocab_size"),
        (["pretrain", "--data", str(data), "--text-column", "text", "--out", str(tmp_path / "r"), "--steps", "1",
          "input.max_length=0"], "max_length"),
        (["pretrain", "--data", str(table), "--out", str(tmp_path / "r"), "--steps", "1", "--encoder", "mlp",
          "input.vocab_size=100"], "input.* options are for text"),
        (["evaluate", str(run), "--data", str(table), "--protocol", "linear"], "trained on text data, the data is table"),
        (["topics", str(run), "--data", str(table), "--clusters", "2", "--out", str(tmp_path / "t.json")],
         "topics need documents"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)
    assert "id, text, label" in _error(["pretrain", "--data", str(data), "--text-column", "body", "--out", "r"], capsys)
    assert not (tmp_path / "t.json").exists()


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_the_api_takes_lists_of_strings(tmp_path):
    docs, labels = corpus(20)
    model = SelfSupervised(encoder="fasttext", epochs=2, batch_size=32, encoder_options={"dim": 16},
                           input_options={"vocab_size": 100, "max_length": 12}).fit(docs)
    features = model.transform(docs[:5])
    assert features.shape == (5, 16) and model.description_["modality"] == "text"
    model.save(tmp_path / "m.safetensors")
    again = SelfSupervised.load(tmp_path / "m.safetensors")
    assert np.allclose(again.transform(docs[:5]), features, atol=1e-6)
    with pytest.raises(SelfmetaError, match="documents"):
        model.transform(np.zeros((3, 4)))
    learner = FewShotLearner(encoder="fasttext", ways=3, shots=1, queries=2, tasks_per_step=4, steps=3,
                             encoder_options={"dim": 16}, input_options={"vocab_size": 100}).fit(docs, labels)
    predicted = learner.adapt(docs[:3] + docs[20:23] + docs[40:43], labels[:3] + labels[20:23] + labels[40:43]
                              ).predict(docs[5:8])
    assert set(predicted) <= set(TOPICS)


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_short_run_on_sms_spam_beats_tfidf_at_ten_labels_per_class(tmp_path):
    """20 s of SimCLR on the train split's text (no label), then a linear probe on 10 labels per class,
    5 draws: a higher spam F1 than TF-IDF (word 1-2 grams) + logistic regression with the same labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from selfmeta.evaluation.protocols import sample_per_class

    path = shared("sms-spam") / "SMSSpamCollection"
    train, test = load_data(path, "train"), load_data(path, "test")
    assert main(["pretrain", "--data", str(path), "--out", str(tmp_path / "run"), "--time-budget", "20",
                 "--no-progress"]) == 0
    backbone, description = load_backbone(tmp_path / "run")
    train_x = embed(backbone, check_compatible(description, train)).numpy()
    test_x = embed(backbone, check_compatible(description, test)).numpy()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(train.raw)
    train_t, test_t = vectorizer.transform(train.raw), vectorizer.transform(test.raw)
    y, test_y, spam = train.y.numpy(), test.y.numpy(), train.classes.index("spam")
    ours, theirs = [], []
    for seed in range(5):
        idx = sample_per_class(y, 10, seed)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(train_x[idx], y[idx])
        ours.append(f1_score(test_y, probe.predict(test_x), pos_label=spam))
        baseline = LogisticRegression(max_iter=2000).fit(train_t[idx], y[idx])
        theirs.append(f1_score(test_y, baseline.predict(test_t), pos_label=spam))
    print(f"spam F1 at 10 labels per class: {np.mean(ours):.3f} against TF-IDF {np.mean(theirs):.3f}")
    assert np.mean(ours) > np.mean(theirs), (np.mean(ours), np.mean(theirs))
