"""A teacher for your data: train-teacher on a folder, "auto" selection, class-name matching.

Tiny folders of real MNIST digits written as PNGs: ``digits3`` has classes 3, 5, 8 and
``pairs5`` five classes of digit pairs (0_1, ..., 8_9) that no shipped teacher knows.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import ddoq
from ddoq import export
from ddoq.cli import main
from ddoq.data import load_dataset
from ddoq.labels import hard_labels, teacher_logits
from ddoq.teachers import Selection, load_teacher, resolve_teacher, teacher_dir_for
from ddoq.teachers.training import TeacherConfig, train_teacher

PER_CLASS = 40


def _write_folder(root: Path, classes: list[str], per_class: int) -> Path:
    data = load_dataset("mnist", "all")
    targets = np.asarray(data.targets)
    for name in classes:
        digits = [int(d) for d in name.split("_")]
        idx = np.flatnonzero(np.isin(targets, digits))[:per_class]
        (root / name).mkdir(parents=True)
        for j, i in enumerate(idx):
            pixels = (data[int(i)][0][0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{j:03d}.png")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The two folders, and a private DDOQ_CACHE_DIR (teachers, latents) for the module."""
    base = tmp_path_factory.mktemp("teachers")
    folders = {
        "digits3": _write_folder(base / "digits3", ["3", "5", "8"], PER_CLASS),
        "pairs5": _write_folder(base / "pairs5", ["0_1", "2_3", "4_5", "6_7", "8_9"], 12),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDOQ_CACHE_DIR", str(base / "cache"))
        yield base, folders


@pytest.fixture(scope="module")
def trained(env):
    """`ddoq train-teacher --dataset digits3` into the default place; (folder, stdout)."""
    _, folders = env
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["train-teacher", "--dataset", str(folders["digits3"]), "--epochs", "6"]
            + ["--width", "16", "--quiet"]
        )
    assert code == 0
    return teacher_dir_for(folders["digits3"]), out.getvalue()


def test_train_teacher_on_a_folder_writes_class_names_and_held_out_accuracy(env, trained):
    base, folders = env
    folder, stdout = trained
    assert folder.parent == base / "cache" / "teachers"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["class_names"] == ["3", "5", "8"]
    assert cfg["dataset"] == str(folders["digits3"])
    assert cfg["dataset_key"] == load_dataset(folders["digits3"], "train").fingerprint
    trained_on = load_dataset(folders["digits3"], "train", image_size=32)
    assert cfg["data_fingerprint"] == trained_on.fingerprint
    assert "--dataset" in cfg["command"]
    accuracy = cfg["metrics"]["test_accuracy"]
    assert f"held-out accuracy {accuracy:.4f}" in stdout and "3 classes" in stdout
    assert accuracy > 0.6  # chance is 1/3
    # the recorded accuracy is the saved teacher's on the folder's held-out split
    test = load_dataset(folders["digits3"], "test", image_size=32)
    assert cfg["metrics"]["test_images"] == len(test) == 3 * round(0.2 * PER_CLASS)
    pred = hard_labels(load_teacher(folder), test.images())
    assert float((pred == torch.as_tensor(test.targets)).float().mean()) == pytest.approx(accuracy)


@pytest.fixture(scope="module")
def set3(env, trained):
    """`ddoq distill --teacher auto` of digits3; (export folder, stdout lines)."""
    import contextlib
    import io

    base, folders = env
    out, printed = base / "set3", io.StringIO()
    argv = ["distill", "--dataset", str(folders["digits3"]), "--ipc", "2", "--out", str(out)]
    with contextlib.redirect_stdout(printed):
        assert main(argv + ["--teacher", "auto", "--quiet"]) == 0
    return out, printed.getvalue().splitlines()


def test_distill_auto_labels_with_the_teacher_trained_for_the_folder(trained, set3):
    folder, _ = trained
    out, printed = set3
    line = next(p for p in printed if p.startswith("teacher: "))  # after the prior's line
    assert line.startswith(f"teacher: {folder} ") and "trained for this dataset" in line
    ds = export.load(out)
    assert ds.class_names == ["3", "5", "8"]
    assert ds.teacher_logits.shape == (6, 3)
    teacher = load_teacher(folder)
    assert ds.manifest["teacher"]["fingerprint"] == teacher.fingerprint
    assert ds.manifest["teacher"]["spec"] == str(folder.resolve())
    # the stored logits are that teacher's on the images (re-read from 8-bit PNGs)
    assert torch.allclose(teacher_logits(teacher, ds.images), ds.teacher_logits, atol=0.05)


def test_unknown_classes_stop_before_any_work_with_one_line(env, capsys):
    base, folders = env
    cache = base / "latents-pairs"
    for teacher in ("auto", "embedded"):
        out = base / f"never-{teacher}"
        argv = ["distill", "--dataset", str(folders["pairs5"]), "--ipc", "2", "--out", str(out)]
        argv += ["--teacher", teacher, "--cache-dir", str(cache), "--quiet"]
        assert main(argv) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "[0_1, 2_3, 4_5, 6_7, 8_9]" in err and "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in err
        assert f"ddoq train-teacher --dataset {folders['pairs5']}" in err
        assert "hard labels" in err
        assert not out.exists() and not cache.exists()  # nothing encoded, nothing written
        assert not list(base.glob(f".never-{teacher}*"))


def test_soft_labels_of_other_classes_are_refused_by_train(env, capsys):
    """A set with no teacher for its 5 classes: `ddoq train --labels soft` stops in one line
    (a set stored with 10-column labels too), `--labels hard` trains."""
    base, folders = env
    out = base / "set5"
    argv = ["distill", "--dataset", str(folders["pairs5"]), "--ipc", "1", "--out", str(out)]
    assert main(argv + ["--teacher", "none", "--quiet"]) == 0
    train = ["train", "--distilled", str(out), "--epochs", "1", "--width", "8", "--quiet"]
    assert main(train + ["--out", str(base / "run5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "[0_1, 2_3, 4_5, 6_7, 8_9]" in err
    assert main(train + ["--out", str(base / "run5h"), "--labels", "hard"]) == 0
    # what the old default wrote: 10-column soft labels for 5 classes
    ds = export.load(out)
    wrong = base / "set5-wrong"
    ds.teacher_logits = torch.randn(len(ds), 10)
    ds.save(wrong)
    capsys.readouterr()
    train[2] = str(wrong)
    assert main(train + ["--out", str(base / "run5w")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "10 columns" in err and "5 classes" in err


def test_a_selection_is_data_and_only_describe_words_it():
    # the wording people read, for each way a teacher is chosen and matched
    assert Selection("given").describe() == "given"
    assert Selection("recorded").describe() == "the set's teacher"
    assert Selection("own").describe() == "auto: trained for this dataset, same class names"
    assert Selection("cached", "reordered", 3, 3).describe() == (
        "auto: a cached teacher; outputs reordered to the dataset's class order"
    )
    assert Selection("embedded", "restricted", 2, 10).describe() == (
        "auto: the embedded teacher; restricted to 2 of its 10 classes"
    )
    assert Selection("given", "by_index").describe().startswith("given; by output index")
    with pytest.raises(ValueError, match="unknown teacher selection"):
        Selection("whim")
    # no code of the package reads the words back: nothing branches on `.selected`
    package = Path(ddoq.__file__).parent
    readers = [
        str(f.relative_to(package))
        for f in package.rglob("*.py")
        if re.search(r"\.selected\s*(\.|==|!=|\[)", f.read_text())
    ]
    assert not readers


def test_a_permuted_teacher_is_reordered_and_a_superset_restricted(trained):
    folder, _ = trained
    raw = load_teacher(folder)
    x = load_dataset("mnist", "test", image_size=32).images(range(16))
    logits = teacher_logits(raw, x)  # columns 3, 5, 8
    order = ["8", "3", "5"]
    t = resolve_teacher(str(folder), order)
    assert t.class_names == order and t.num_classes == 3
    expected = torch.stack([logits[:, raw.class_names.index(c)] for c in order], 1)
    assert torch.equal(teacher_logits(t, x), expected)
    assert t.selection == Selection("given", "reordered", used=3, known=3)
    assert "reordered" in t.describe()
    # "auto" for a dataset with those classes in that order finds the cached teacher
    auto = resolve_teacher("auto", order)
    assert auto.source == str(folder) and torch.equal(teacher_logits(auto, x), expected)
    assert auto.selection.source == "cached" and auto.selection.mapping == "reordered"
    # the embedded teacher restricted to two of its digits
    embedded = load_teacher("embedded")
    sub = resolve_teacher("embedded", ["7", "1"])
    full = teacher_logits(embedded, x)
    assert torch.equal(teacher_logits(sub, x), full[:, [7, 1]])
    assert sub.selection == Selection("given", "restricted", used=2, known=10)
    assert "restricted to 2 of its 10 classes" in sub.describe()
    with pytest.raises(ValueError, match=r"knows the classes \[3, 5, 8\]"):
        resolve_teacher(str(folder), ["3", "5", "9"])


def test_export_relabels_with_the_embedded_teacher_restricted_by_name(env, set3, capsys):
    base, _ = env
    out = base / "set3-embedded"
    argv = ["export", str(set3[0]), "--out", str(out), "--teacher", "embedded", "--quiet"]
    assert main(argv) == 0
    assert "restricted to 3 of its 10 classes" in capsys.readouterr().out
    ds = export.load(out)
    full = teacher_logits(load_teacher("embedded"), ds.images)
    assert torch.equal(ds.teacher_logits, full[:, [3, 5, 8]])
    assert ds.manifest["teacher"]["output_index"] == [3, 5, 8]


def test_a_missing_image_in_a_set_is_one_line_naming_the_file(env, set3, capsys):
    base, _ = env
    broken = base / "set3-broken"
    shutil.copytree(set3[0], broken)
    victim = (
        broken / json.loads((broken / "metadata.jsonl").read_text().splitlines()[3])["file_name"]
    )
    victim.unlink()
    argv = ["train", "--distilled", str(broken), "--out", str(base / "r"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(victim) in err and "missing" in err


def test_fine_tune_a_torchvision_teacher_from_a_local_weights_file(env, tmp_path, capsys):
    _, folders = env
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=7)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "r18-teacher"
    argv = ["train-teacher", "--dataset", str(folders["digits3"]), "--arch", "resnet18"]
    argv += ["--weights", str(tmp_path / "r18.pth"), "--epochs", "1", "--image-size", "32"]
    argv += ["--limit-per-class", "8", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "resnet18" and cfg["class_names"] == ["3", "5", "8"]
    assert cfg["training"]["lr"] == 1e-4 and cfg["metrics"]["train_images"] == 24
    teacher = load_teacher(out)
    assert teacher.num_classes == 3 and teacher.image_size == 32 and teacher.channels == 3
    test = load_dataset(folders["digits3"], "test", image_size=32)
    pred = hard_labels(teacher, test.images())
    recomputed = float((pred == torch.as_tensor(test.targets)).float().mean())
    assert recomputed == pytest.approx(cfg["metrics"]["test_accuracy"])
    # the backbone started from the file (one epoch at lr 1e-4 moves it a little), the
    # head is new
    state, start = teacher.net.state_dict(), net.state_dict()["layer1.0.conv1.weight"]
    moved = (state["layer1.0.conv1.weight"] - start).abs().max()
    assert 0 < moved < 0.01
    assert state["fc.weight"].shape == (3, 512)


def test_progress_callback_and_bad_settings(env, tmp_path, capsys):
    _, folders = env
    calls = []
    config = TeacherConfig(dataset=str(folders["digits3"]), epochs=2, width=8, limit_per_class=5)
    report = train_teacher(config, tmp_path / "t", progress=lambda *a: calls.append(a))
    assert [(e, n) for e, n, _ in calls] == [(1, 2), (2, 2)]
    assert "loss" in calls[0][2] and calls[-1][2]["test_accuracy"] == report.test_accuracy
    # reporting progress changes nothing: the same weights as a run without a callback
    train_teacher(config, tmp_path / "u", progress=False)
    weights = [(tmp_path / d / "model.safetensors").read_bytes() for d in ("t", "u")]
    assert weights[0] == weights[1]
    for argv, message in [
        (["--dataset", str(tmp_path / "nowhere")], "neither an embedded dataset"),
        (["--weights", str(tmp_path / "w.pth")], "torchvision --arch"),
        (["--arch", "not_a_model"], "unknown teacher architecture"),
        (["--epochs", "0"], "epochs"),
    ]:
        assert main(["train-teacher", *argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_class_balanced_weights_are_scikit_learns_balanced_class_weights():
    from sklearn.utils.class_weight import compute_class_weight

    from ddoq.teachers.training import class_balanced_weights

    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 3, 4], size=300, p=[0.6, 0.25, 0.1, 0.05])  # class 2 absent
    expected = compute_class_weight("balanced", classes=np.unique(y), y=y)
    got = class_balanced_weights(torch.as_tensor(y)).numpy()
    lookup = dict(zip(np.unique(y), expected, strict=True))
    np.testing.assert_allclose(got, [lookup[c] for c in y], rtol=1e-6)
    assert got.mean() == pytest.approx(1.0)


def test_a_balanced_teacher_on_unequal_classes_records_recall_and_balanced_accuracy(
    env, tmp_path, capsys
):
    """A folder of 48 threes and 10 eights: --balanced weights the loss, and the recorded
    per-class recall and balanced accuracy are scikit-learn's on the saved teacher's
    predictions of the held-out split."""
    from sklearn.metrics import balanced_accuracy_score, recall_score

    folder = _write_folder(tmp_path / "unequal", ["3"], 48)
    _write_folder(folder, ["8"], 10)
    test = load_dataset(folder, "test", image_size=32)
    outs = {}
    for balanced in (False, True):
        out = tmp_path / f"teacher-{balanced}"
        argv = ["train-teacher", "--dataset", str(folder), "--epochs", "3", "--width", "8"]
        argv += ["--out", str(out), "--quiet"] + (["--balanced"] if balanced else [])
        assert main(argv) == 0
        printed = capsys.readouterr().out
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["training"]["balanced"] is balanced
        assert ("--balanced" in cfg["command"]) is balanced
        pred = hard_labels(load_teacher(out), test.images()).numpy()
        truth = np.asarray(test.targets)
        metrics = cfg["metrics"]
        assert metrics["test_balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(truth, pred)
        )
        np.testing.assert_allclose(metrics["test_recall"], recall_score(truth, pred, average=None))
        assert f"balanced accuracy {metrics['test_balanced_accuracy']:.4f}" in printed
        outs[balanced] = (out / "model.safetensors").read_bytes()
    assert outs[False] != outs[True]  # the weights changed what it learned
