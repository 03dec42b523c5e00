"""Bad input, one test per class of defect: one ``error:`` line and exit status 2, and every file as it was.

Most cases drive ``selfmeta.cli.main`` in the test process (as a user's command line, without the cost of
a new interpreter); the ones that need a process to die or a file-size limit run ``selfmeta`` as a
subprocess. The numbers in the comments are the defects of the issue that listed them.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfmeta.cli import main
from selfmeta.data import load_data
from selfmeta.engine.checkpoint import load_checkpoint, save_weights
from selfmeta.errors import SelfmetaError

EXE = str(Path(sys.executable).with_name("selfmeta"))
FAST = ["--epochs", "1", "--no-progress", "batch_size=128", "views.hflip=0"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_error(capsys, argv: list[str], *fragments: str) -> str:
    """Run the CLI; assert exit status 2 and exactly one stderr line, 'error: ...' holding every fragment."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 1-epoch SimCLR run on digits (read-only for the tests: copy before writing)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(run), *FAST]) == 0
    return run


def copy_run(run: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, to))


# --- 4. options: a declared type and range, the same from the command line and from a TOML file -----------

BAD_OPTIONS = [
    ("batch_size=64.5", "option batch_size takes null or an integer >= 2, got 64.5"),
    ("lr=fast", "option lr takes null or a number > 0, got 'fast'"),
    ("lr=-1", "option lr takes null or a number > 0, got -1"),
    ("lr=nan", "option lr takes null or a number > 0, got 'nan'"),
    ("weight_decay=x", "option weight_decay takes null or a number >= 0, got 'x'"),
    ("seed=abc", "option seed takes an integer >= 0, got 'abc'"),
    ("log_every=0", "option log_every takes an integer >= 1, got 0"),
    ("encoder=[1]", "option encoder takes text, got [1]"),
    ("method.temperature=abc", "method 'simclr' option temperature takes a number > 0, got 'abc'"),
    ("method.temperature=-1", "method 'simclr' option temperature takes a number > 0, got -1"),
    ("encoder.width=0", "encoder 'conv4' option width takes an integer >= 1, got 0"),
    ("views.crop_scale=[1,0.2]", "image views option crop_scale takes a pair of numbers > 0 and <= 1, low <= high"),
    ("views.blur_sigma=[0,0]", "image views option blur_sigma takes a pair of numbers > 0"),
    ("views.hflip=2", "image views option hflip takes a number >= 0 and <= 1, got 2"),
    ("channels_last=no", "option channels_last takes true or false, got 'no'"),
    ("precision=fp16", "option precision takes one of: auto, fp32, bf16, got 'fp16'"),
]


@pytest.mark.parametrize("override, message", BAD_OPTIONS, ids=[o for o, _ in BAD_OPTIONS])
def test_bad_option_values(capsys, tmp_path, override, message):
    user_error(capsys, ["pretrain", "--data", "digits", "--out", "run", *FAST, override], message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("toml, message", [
    ("batch_size = 64.5", "option batch_size takes null or an integer >= 2, got 64.5"),
    ('lr = "fast"', "option lr takes null or a number > 0, got 'fast'"),
    ("lr = nan", "option lr takes null or a number > 0, got nan"),
    ("seed = -3", "option seed takes an integer >= 0, got -3"),
    ("[method_options]\ntemperature = 0", "method 'simclr' option temperature takes a number > 0, got 0"),
    ('[view_options]\ncrop_scale = [1, 0.2]', "image views option crop_scale takes a pair of numbers > 0 and <= 1"),
    ('[views]\nhflip = 0', "unknown option 'views'"),
])
def test_bad_option_values_from_a_toml_file(capsys, tmp_path, toml, message):
    (tmp_path / "options.toml").write_text(toml + "\n")
    user_error(capsys, ["pretrain", "--data", "digits", "--out", "run", "--epochs", "1", "--config", "options.toml"],
               message)
    assert not (tmp_path / "run").exists()


def test_bad_task_option(capsys, tmp_path):
    user_error(capsys, ["metatrain", "--data", "digits", "--tasks", "cactus", "--out", "run", "--steps", "1",
                        "tasks.clusters=abc"], "tasks 'cactus' option clusters takes an integer >= 2, got 'abc'")
    assert not (tmp_path / "run").exists()


# --- 2. a NaN time budget --------------------------------------------------------------------------------

@pytest.mark.parametrize("budget", ["nan", "inf", "-5", "0"])
def test_time_budget_must_be_a_positive_number(capsys, tmp_path, budget):
    user_error(capsys, ["pretrain", "--data", "digits", "--out", "run", "--time-budget", budget, "--no-progress"],
               "option time_budget takes null or a number > 0")
    assert not (tmp_path / "run").exists()


# --- 3. a run that fails before its first checkpoint does not block the rerun or --resume -----------------

def test_a_nan_loss_at_step_0_leaves_a_run_that_the_rerun_takes_over(capsys, tmp_path, monkeypatch):
    from selfmeta.methods.simclr import SimCLR

    original = SimCLR.forward
    monkeypatch.setattr(SimCLR, "forward", lambda self, x, i: type(out := original(self, x, i))(out.loss * np.nan))
    message = user_error(capsys, ["pretrain", "--data", "digits", "--out", "run", *FAST], "the loss became nan at step 0")
    assert "no checkpoint was written yet" in message and "last good checkpoint" not in message
    assert (tmp_path / "run" / "config.json").is_file() and not (tmp_path / "run" / "checkpoint.pt").exists()
    monkeypatch.setattr(SimCLR, "forward", original)
    for resume in ([], ["--resume"]):  # the same command, with or without --resume, starts it again
        assert main(["pretrain", "--data", "digits", "--out", "run", *FAST, *resume]) == 0, capsys.readouterr().err
        assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["finished"]
        if not resume:
            (tmp_path / "run" / "checkpoint.pt").unlink()  # back to a started-only run for the second pass
            (tmp_path / "run" / "encoder.safetensors").unlink()


def test_a_run_killed_in_its_first_epoch_is_started_again(tmp_path):
    args = [EXE, "pretrain", "--data", "digits", "--out", "run", "--epochs", "1", "batch_size=2", "--no-progress"]
    proc = subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "metrics.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "checkpoint.pt").exists(), "the epoch finished before the kill"
    rerun = subprocess.run([*args[:6], "--steps", "3", "--no-progress"], cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 3


def test_out_that_is_a_file(capsys, tmp_path):
    (tmp_path / "run").write_text("not a folder")
    user_error(capsys, ["pretrain", "--data", "digits", "--out", "run", *FAST], "--out run is a file")
    assert (tmp_path / "run").read_text() == "not a folder"


# --- 6, 9: --resume: a torn metrics line, other data or options, stale temporaries --------------------------

def test_resume_after_a_torn_metrics_line_and_stale_temporaries(capsys, tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "lo')                                   # killed in the middle of an append
    stale = run / ".checkpoint.pt.999999999-00ff00ff.tmp"            # a killed writer's temporary (no such pid)
    stale.write_bytes(b"half")
    assert main(["pretrain", "--data", "digits", "--out", "run", "--epochs", "2", "--resume", "--no-progress"]) == 0
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == load_checkpoint(run / "checkpoint.pt")["step"]
    assert not stale.exists()


@pytest.mark.parametrize("change, message", [
    (["batch_size=64"], "batch_size=64 (the run has 128)"),
    (["method.temperature=0.2"], "method.temperature=0.2 (the run has 0.5)"),
    (["--method", "byol"], 'method="byol" (the run has "simclr")'),
    (["--format", "digits", "--label-column", "x"], "--label-column does not apply to digits data"),
])
def test_resume_refuses_other_options(capsys, tmp_path, finished_run, change, message):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    user_error(capsys, ["pretrain", "--data", "digits", "--out", "run", "--epochs", "2", "--resume", *change], message)
    assert snapshot(run) == before


def test_resume_refuses_other_data(capsys, tmp_path):
    for name, rows in (("a.csv", 64), ("b.csv", 80)):
        rng = np.random.default_rng(rows)
        lines = ["x0,x1,x2"] + [",".join(f"{v:.4f}" for v in rng.normal(size=3)) for _ in range(rows)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    assert main(["pretrain", "--data", "a.csv", "--out", "run", "--epochs", "1", "batch_size=16", "--no-progress"]) == 0
    before = snapshot(tmp_path / "run")
    line = user_error(capsys, ["pretrain", "--data", "b.csv", "--out", "run", "--epochs", "2", "--resume"],
                      "other data or options")
    assert "data items 64 (the run has 51)" in line or "data path" in line
    assert snapshot(tmp_path / "run") == before
    assert main(["pretrain", "--data", "a.csv", "--out", "run", "--epochs", "2", "--resume", "--no-progress"]) == 0


# --- 7. a full disk ----------------------------------------------------------------------------------------

def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death: a full disk, as seen by write()
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_is_one_error_line_and_the_previous_checkpoint_is_kept(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path / "run")
    before = load_checkpoint(run / "checkpoint.pt")
    weights = (run / "encoder.safetensors").read_bytes()
    proc = subprocess.run([EXE, "pretrain", "--data", "digits", "--out", "run", "--epochs", "2", "--resume",
                           "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          preexec_fn=_limit_file_size(200_000))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot write") and "File too large" in lines[0], lines[0]
    after = load_checkpoint(run / "checkpoint.pt")
    assert after["step"] == before["step"] and (run / "encoder.safetensors").read_bytes() == weights
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


# --- 5, 8, 9: data files ------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, image_code: int = 0x08) -> Path:
    folder.mkdir(exist_ok=True)
    for prefix in ("train", "t10k"):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images, image_code))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x08 if labels.dtype == np.uint8 else 0x0C))
    return folder


def test_a_huge_label_value_is_one_class(tmp_path):
    folder = write_idx(tmp_path / "d", np.zeros((10, 4, 4), np.uint8), np.array([30_000_000] * 5 + [7] * 5, np.int32))
    data = load_data(folder, "train")
    assert data.classes == ["7", "30000000"] and data.y.tolist() == [1] * 5 + [0] * 5


def test_an_idx_header_larger_than_its_file_is_refused_before_reading(capsys, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    header = bytes([0, 0, 8, 3]) + struct.pack(">3i", 1_000_000, 1000, 1000)  # claims 1 TB
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(100)))
    user_error(capsys, ["embed", "nowhere", "--data", folder, "--out", "f.npy"], "more than the file can decompress to")


def test_an_idx_file_with_no_items(capsys, tmp_path):
    folder = write_idx(tmp_path / "d", np.zeros((0, 4, 4), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(SelfmetaError, match="the data is empty"):
        load_data(folder, "train")


@pytest.mark.parametrize("dtype, code, values, expected", [
    (np.float32, 0x0D, [0.0, 0.25, 1.0], "float"),
    (np.int16, 0x0B, [0, 128, 255], "uint8"),
    (np.float32, 0x0D, [0.0, 0.5, 3.0], "pixel values from 0.0 to 3.0"),
    (np.int16, 0x0B, [0, 1000, 5], "pixel values from 0 to 1000"),
])
def test_idx_pixel_types_are_kept_or_refused_never_wrapped(tmp_path, dtype, code, values, expected):
    images = np.array(values, dtype=dtype).repeat(16).reshape(3, 4, 4)
    folder = write_idx(tmp_path / "d", images, np.arange(3, dtype=np.uint8), code)
    if expected in ("float", "uint8"):
        x = load_data(folder, "train").x
        assert x.dtype == (torch.float32 if expected == "float" else torch.uint8)
        assert x[:, 0, 0, 0].tolist() == pytest.approx(values)
    else:
        with pytest.raises(SelfmetaError, match=expected):
            load_data(folder, "train")


def png(size: tuple[int, int], mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_zip_bomb_member_is_refused_before_it_is_inflated(capsys, tmp_path):
    with zipfile.ZipFile(tmp_path / "images.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/1.png", png((4, 4)))
        z.writestr("a/2.png", png((4, 4)))
        z.writestr("b/bomb.png", bytes(64 * 2**20))             # 64 MiB of zeros in about 64 KiB
    user_error(capsys, ["embed", "nowhere", "--data", "images.zip", "--out", "f.npy"], "would inflate to 67108864 bytes")


def test_a_giant_png_is_refused(capsys, tmp_path):
    for name in ("a/1.png", "b/1.png"):
        (tmp_path / "img" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / name).write_bytes(png((4, 4)))
    (tmp_path / "img" / "b" / "2.png").write_bytes(png((20_000, 20_000), "1"))
    user_error(capsys, ["embed", "nowhere", "--data", "img", "--out", "f.npy"], "image too large to decode safely")


@pytest.mark.parametrize("name", ["/abs/a/1.png", "../up/a/1.png"])
def test_unsafe_zip_member_names(capsys, tmp_path, name):
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as z:
        z.writestr("a/0.png", png((4, 4)))
        z.writestr(zipfile.ZipInfo(name), png((4, 4)))
    user_error(capsys, ["embed", "nowhere", "--data", "images.zip", "--out", "f.npy"], "unsafe member name")


def test_grey_and_colour_images_make_an_rgb_folder_whatever_sorts_first(tmp_path):
    for name, mode in (("a/0.png", "L"), ("a/1.png", "L"), ("b/2.png", "RGB")):
        (tmp_path / "img" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / name).write_bytes(png((4, 4), mode))
    assert load_data(tmp_path / "img", "all").x.shape == (3, 3, 4, 4)


def test_cifar_meta_without_a_list_of_names(capsys, tmp_path):
    import pickle

    (tmp_path / "c").mkdir()
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name, content in (("data_batch_1", batch), ("test_batch", batch), ("batches.meta", {b"label_names": 7})):
        (tmp_path / "c" / name).write_bytes(pickle.dumps(content, protocol=2))
    user_error(capsys, ["embed", "nowhere", "--data", "c", "--split", "test", "--out", "f.npy"], "not a CIFAR meta file")


def test_label_column_for_images(capsys):
    user_error(capsys, ["pretrain", "--data", "digits", "--out", "run", *FAST, "--label-column", "y"],
               "--label-column does not apply to digits data; it is for csv, jsonl, parquet, tablefolder, tsv data")


# --- 8, 9: evaluate, embed and download --------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--protocol", "fewshot", "--ways", "0"], "ways must be an integer >= 1, got 0"),
    (["--protocol", "fewshot", "--shots", "0"], "shots must be an integer >= 1, got 0"),
    (["--protocol", "linear", "--labels-per-class", "3", "--seeds", "0"], "--seeds must be at least 1, got 0"),
])
def test_evaluate_refuses_zero_counts(capsys, tmp_path, finished_run, extra, message):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    user_error(capsys, ["evaluate", "run", "--data", "digits", *extra], message)
    assert snapshot(run) == before


def test_linear_probe_on_a_single_class(capsys, tmp_path):
    lines = ["x0,x1,label"] + [f"{i % 7}.0,{i % 3}.5,same" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    assert main(["pretrain", "--data", "t.csv", "--out", "run", "--epochs", "1", "batch_size=8", "--no-progress"]) == 0
    capsys.readouterr()
    user_error(capsys, ["evaluate", "run", "--data", "t.csv", "--protocol", "linear"],
               "the linear protocol needs at least 2 classes; the data has 1")


def test_evaluate_says_an_unwritable_run_before_computing(capsys, tmp_path, finished_run, monkeypatch):
    run = copy_run(finished_run, tmp_path / "run")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == Path("run") else real_access(p, mode))
    monkeypatch.setattr("selfmeta.cli._load", lambda *a, **k: pytest.fail("the data was loaded before the check"))
    user_error(capsys, ["evaluate", "run", "--data", "digits", "--protocol", "knn"], "run is not writable")
    assert not (run / "metrics.json").exists()


@pytest.mark.parametrize("description, message", [
    ([1, 2], "its description is not a table"),
    ({"encoder": "conv4"}, "no valid 'encoder_options'"),
    ({"encoder": "conv4", "encoder_options": {}, "input_shape": [1, 8, 8], "modality": "image", "method": 3},
     "no valid 'method'"),
])
def test_weights_with_malformed_metadata(capsys, tmp_path, description, message):
    save_weights(tmp_path / "w.safetensors", {"w": torch.ones(1)}, description)
    user_error(capsys, ["embed", "w.safetensors", "--data", "digits", "--out", "f.npy"], message)
    assert not (tmp_path / "f.npy").exists()


def test_download_into_a_root_that_is_a_file(capsys, tmp_path):
    (tmp_path / "root").write_text("a file")
    user_error(capsys, ["download", "mnist", "--root", "root"], "cannot download")
    assert (tmp_path / "root").read_text() == "a file"


# --- 10. archives, caches, the umask -----------------------------------------------------------------------

@pytest.mark.parametrize("member", ["../escape.txt", "/etc/passwd-copy", "link"])
def test_unsafe_tar_members_are_refused(tmp_path, member):
    from selfmeta.data.download import safe_members

    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with tarfile.open(tmp_path / "a.tar") as tar, pytest.raises(SelfmetaError, match="unsafe member"):
        safe_members(tar)


def test_an_interrupted_cifar_extraction_leaves_no_folder(tmp_path, monkeypatch):
    from selfmeta.data import download

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    monkeypatch.setattr(download, "fetch", lambda remote, root: archive)
    monkeypatch.setattr(tarfile.TarFile, "extractall", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(SelfmetaError, match="cannot unpack"):
        download.download_cifar10(tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]
    monkeypatch.undo()
    monkeypatch.setattr(download, "fetch", lambda remote, root: archive)
    assert (download.download_cifar10(tmp_path) / "test_batch").read_bytes() == b"abc"


def test_two_downloads_never_share_a_temporary_file(tmp_path):
    from selfmeta.files import temporary_name

    names = {temporary_name(tmp_path / "file.gz") for _ in range(100)}
    assert len(names) == 100 and all(n.name.startswith(f".file.gz.{os.getpid()}-") for n in names)


def test_the_omniglot_cache_follows_the_zip_content_not_its_size_and_time(tmp_path):
    from selfmeta.data.sources.omniglot import _fingerprint

    def write(content: bytes) -> None:
        with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as z:
            z.writestr("images_background/A/character01/1.png", content)
        os.utime(tmp_path / "images_background.zip", ns=(10**18, 10**18))

    write(b"first")
    before = _fingerprint(tmp_path / "images_background.zip")
    write(b"other")                                              # same size, same time stamp
    assert _fingerprint(tmp_path / "images_background.zip") != before


def test_importing_selfmeta_leaves_the_umask_alone_and_files_follow_it(tmp_path):
    code = ("import os; os.umask(0o027); import selfmeta, selfmeta.files as f, pathlib; "
            "assert os.umask(0o027) == 0o027; p = pathlib.Path(r'%s'); "
            "f.atomic_write(p, lambda t: t.write_text('x')); print(oct(p.stat().st_mode & 0o777))" % (tmp_path / "out"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0o640"


# --- 1, 11, 12: saving table estimators, precision, the allocator ------------------------------------------

def test_a_table_estimator_saves_and_loads(tmp_path):
    from selfmeta import SelfSupervised

    x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    est = SelfSupervised(encoder="mlp", epochs=1, batch_size=32).fit(x)
    est.save(tmp_path / "table.safetensors")
    loaded = SelfSupervised.load(tmp_path / "table.safetensors")
    np.testing.assert_array_equal(loaded.transform(x), est.transform(x))


def test_precision_auto_takes_bf16_only_where_it_is_native(monkeypatch, caplog):
    from selfmeta import runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert runtime.resolve_precision("auto", cpu) == "fp32"
    with caplog.at_level("WARNING"):
        assert runtime.resolve_precision("bf16", cpu) == "bf16"
    assert "without native bf16" in caplog.text
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert runtime.resolve_precision("auto", cpu) == "bf16"
    assert runtime.resolve_precision("fp32", cpu) == "fp32"


def test_the_run_records_the_precision_it_used(finished_run):
    from selfmeta.runtime import native_bf16

    record = json.loads((finished_run / "config.json").read_text())
    assert record["config"]["precision"] == "auto"
    assert record["precision_used"] == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")


def test_the_allocator_is_tuned_by_the_command_line_only():
    code = ("import ctypes, selfmeta, selfmeta.api, selfmeta.runtime as r; "
            "print(r.tune_allocator.cache_info().currsize); from selfmeta.cli import main; "
            "main(['list']); print(r.tune_allocator.cache_info().currsize, r.tune_allocator())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "0"                                      # importing the library tunes nothing
    assert lines[-1] == ("1 True" if sys.platform == "linux" else "1 False")
    opted_out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={**os.environ, "SELFMETA_MALLOC": "default"})
    assert opted_out.stdout.strip().splitlines()[-1] == "1 False"
