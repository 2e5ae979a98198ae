"""Scale-out: the Ray engine equals the local one, survives killed workers, and runs resume.

A local Ray cluster with 2 CPUs is started once for the module (loopback only); the CLI
test reaches it through --ray-address, as a user would reach a running cluster.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ddoq import export
from ddoq.cli import main
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.folder import distill_to_folder
from ddoq.distillation.ray_engine import KILL_ONCE_ENV
from ddoq.distillation.store import RunStore, read_part

# img2img with a few steps: exercises the per-image noise seeds as well as the decoder
SETTINGS = dict(ipc=4, limit_per_class=40, decode="img2img", steps=4, seed=3)
CLI_SETTINGS = ["--ipc", "4", "--limit-per-class", "40", "--decode", "img2img",
                "--steps", "4", "--seed", "3", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def ray_address():
    from ddoq.distillation.ray_engine import connect

    started = connect(None, num_cpus=2)
    import ray

    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_set(tmp_path_factory):
    """The local engine's export of SETTINGS (the reference every other run must equal)."""
    root = tmp_path_factory.mktemp("local")
    config = DistillConfig(cache_dir=str(root / "cache"), **SETTINGS)
    distill_to_folder(config, root / "out", progress=False)
    return export.load(root / "out")


def assert_same_set(a: export.DistilledSet, b: export.DistilledSet) -> None:
    """Same images (PNG pixels), rows, weights, soft labels, latents and W2 figures."""
    assert a.rows == b.rows  # file names, labels, weights, masses, k, seeds
    assert torch.equal(a.images, b.images)
    torch.testing.assert_close(a.teacher_logits, b.teacher_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=1e-6)
    for ra, rb in zip(a.manifest["metrics"]["w2_per_class"], b.manifest["metrics"]["w2_per_class"]):
        assert ra["w2_weighted"] == pytest.approx(rb["w2_weighted"], rel=1e-6)
        assert ra["w2_uniform"] == pytest.approx(rb["w2_uniform"], rel=1e-6)
    assert a.manifest["config"] | {"cache_dir": None} == b.manifest["config"] | {"cache_dir": None}


@pytest.mark.extended  # make test runs the budgeted Ray-against-local run below
def test_cli_ray_engine_equals_local_engine(ray_address, local_set, tmp_path, capsys):
    out = tmp_path / "ray"
    cache = str(tmp_path / "cache")
    code = main(["distill", "--engine", "ray", "--ray-address", ray_address,
                 "--cache-dir", cache, "--out", str(out), *CLI_SETTINGS])  # fmt: skip
    assert code == 0
    assert "ray engine" in capsys.readouterr().out
    ray_set = export.load(out)
    assert ray_set.manifest["engine"] == "ray"
    assert_same_set(local_set, ray_set)
    # the sharded latent store was joined into the cache, one file per class
    assert len(list((tmp_path / "cache").rglob("class-*.safetensors"))) == 10
    assert not (tmp_path / ".ray.distill-run").exists()  # the run folder is cleaned up


@pytest.mark.extended
def test_killed_workers_are_retried_and_give_the_same_set(
    ray_address, local_set, tmp_path, monkeypatch
):
    """One quantize task's worker and one decode actor die mid-run; Ray redoes their work."""
    markers = {stage: str(tmp_path / f"killed-{stage}") for stage in ("quantize", "decode")}
    monkeypatch.setenv(KILL_ONCE_ENV, json.dumps(markers))
    config = DistillConfig(cache_dir=str(tmp_path / "cache"), **SETTINGS)
    distill_to_folder(config, tmp_path / "out", engine="ray", progress=False)
    for stage, marker in markers.items():
        assert Path(marker).exists(), f"no {stage} worker was killed"
    assert_same_set(local_set, export.load(tmp_path / "out"))


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.extended)])
def test_interrupted_run_resumes_without_redoing_finished_classes(
    engine, ray_address, local_set, tmp_path
):
    config = DistillConfig(cache_dir=str(tmp_path / "cache"), **SETTINGS)
    out = tmp_path / "out"

    def stop_after_three(stage, done, total):
        if done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        distill_to_folder(config, out, engine=engine, progress=False, on_class=stop_after_three)
    assert not out.exists()  # nothing half-written where the export goes
    run = tmp_path / ".out.distill-run"
    done = json.loads((run / "run.json").read_text())["classes_done"]
    assert len(done) >= 3
    kept = {c: (run / "classes" / f"class-{c:05d}.safetensors") for c in done}
    stamps = {c: p.stat().st_mtime_ns for c, p in kept.items()}
    first_part = read_part(kept[done[0]])

    # another setting is refused, not mixed in
    with pytest.raises(ValueError, match="other settings.*ipc"):
        distill_to_folder(DistillConfig(**(SETTINGS | {"ipc": 3})), out, progress=False)

    seen = []

    def check_untouched(stage, n_done, total):
        seen.append(n_done)
        assert {c: p.stat().st_mtime_ns for c, p in kept.items()} == stamps

    result = distill_to_folder(config, out, engine=engine, progress=False, on_class=check_untouched)
    assert result.manifest["resumed_classes"] == len(done)
    assert seen == list(range(len(done) + 1, 11))  # only the other classes were computed
    resumed = export.load(out)
    assert_same_set(local_set, resumed)
    c = done[0]
    # the kept class file is what went into the export (PNG: 1/255 steps)
    torch.testing.assert_close(
        resumed.images[resumed.labels == c], first_part.images, rtol=0, atol=0.5 / 255 + 1e-6
    )
    assert not run.exists()


def test_restart_discards_an_unfinished_run(tmp_path):
    config = DistillConfig(cache_dir=str(tmp_path / "cache"), **(SETTINGS | {"decode": "vae"}))

    def stop(stage, done, total):
        raise Interrupt

    with pytest.raises(Interrupt):
        distill_to_folder(config, tmp_path / "out", progress=False, on_class=stop)
    store_dir = tmp_path / ".out.distill-run"
    assert json.loads((store_dir / "run.json").read_text())["classes_done"] == [0]
    other = DistillConfig(cache_dir=str(tmp_path / "cache"), **(SETTINGS | {"ipc": 2}))
    result = distill_to_folder(other, tmp_path / "out", restart=True, progress=False)
    assert result.manifest["resumed_classes"] == 0 and len(result.labels) == 20
    assert not store_dir.exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["distill", "--workers", "2", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--engine ray" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["distill", "--engine", "spark", "--out", str(tmp_path / "x")])
    assert "invalid choice" in capsys.readouterr().err


def test_run_store_records_only_written_classes(tmp_path):
    """A class listed as done whose file is gone is recomputed, never trusted."""
    from ddoq.data import load_dataset
    from ddoq.priors import load_prior

    prior = load_prior("embedded")
    train = load_dataset("mnist", "train", image_size=32, channels=1, limit_per_class=40)
    config = DistillConfig(**SETTINGS)
    store = RunStore.open(tmp_path / "out", config, train, prior)
    with pytest.raises(RuntimeError, match="missing"):
        store.mark_done(2)
    manifest = json.loads((store.root / "run.json").read_text())
    manifest["classes_done"] = [2]
    (store.root / "run.json").write_text(json.dumps(manifest))
    again = RunStore.open(tmp_path / "out", config, train, prior)
    assert again.done == set() and again.todo() == list(range(10))
    assert np.array_equal(again.todo(), store.todo())
    assert Path(again.root) == store.root


def test_folder_run_streams_the_same_set_as_the_in_memory_run(tmp_path):
    """`distill_to_folder` (class files, images streamed) writes what `distill` computes."""
    from ddoq.distillation.local import distill

    config = DistillConfig(cache_dir=str(tmp_path / "cache"), **(SETTINGS | {"decode": "vae"}))
    in_memory = distill(config, progress=False)
    result = distill_to_folder(config, tmp_path / "out", progress=False)
    assert result.images is None  # the pixels went to the folder, class by class
    written = export.load(tmp_path / "out")
    expected = (in_memory.images * 255).round() / 255  # PNG keeps 8 bits
    torch.testing.assert_close(written.images, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(written.weights, in_memory.weights, rtol=1e-6, atol=0)
    assert torch.equal(written.labels, in_memory.labels)


# a budget shared by the distortion curves: unequal K per class, in both engines
BUDGET = dict(ipc=None, budget=35, limit_per_class=40, seed=3)


@pytest.fixture(scope="module")
def budget_set(tmp_path_factory):
    """The local engine's export of a budgeted run (the reference of the two tests below)."""
    root = tmp_path_factory.mktemp("budget")
    config = DistillConfig(cache_dir=str(root / "cache"), **BUDGET)
    distill_to_folder(config, root / "out", progress=False)
    return export.load(root / "out")


def test_ray_engine_equals_local_engine_on_a_budgeted_run(ray_address, budget_set, tmp_path):
    counts = np.bincount(budget_set.labels.numpy()).tolist()
    assert sum(counts) == 35 and len(set(counts)) > 1  # the classes differ in K
    assert [r["images"] for r in budget_set.manifest["allocation"]["per_class"]] == counts
    config = DistillConfig(cache_dir=str(tmp_path / "cache"), **BUDGET)
    distill_to_folder(config, tmp_path / "out", engine="ray", progress=False)
    ray_set = export.load(tmp_path / "out")
    assert_same_set(budget_set, ray_set)
    assert ray_set.manifest["allocation"] == budget_set.manifest["allocation"]


def test_resumed_budgeted_run_equals_an_uninterrupted_one(budget_set, tmp_path):
    """The allocation is kept in the run folder: a resume uses the counts it began with."""
    config = DistillConfig(cache_dir=str(tmp_path / "cache"), **BUDGET)
    out = tmp_path / "out"

    def stop_after_four(stage, done, total):
        if done == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        distill_to_folder(config, out, progress=False, on_class=stop_after_four)
    run = json.loads((tmp_path / ".out.distill-run" / "run.json").read_text())
    assert run["allocation"]["counts"] == np.bincount(budget_set.labels.numpy()).tolist()
    result = distill_to_folder(config, out, progress=False)
    assert result.manifest["resumed_classes"] == 4
    resumed = export.load(out)
    assert_same_set(budget_set, resumed)
    assert resumed.manifest["allocation"] == budget_set.manifest["allocation"]
