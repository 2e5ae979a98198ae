"""The CUDA paths, against the CPU ones: run with `pytest -m cuda` on a machine with a GPU.

Every test here is marked `cuda` and skipped where torch sees no GPU (CI, the 2-core
machines). CUDA and CPU random generators draw different streams, so comparisons that
would depend on them use given initial grids or compare quality (distortion) instead of
values; the deterministic paths (Lloyd from a given grid, encode, decode, img2img from
CPU-drawn noise, one training step) must agree within float32 tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ddoq.quantize import CLVQ, nearest_centroid, quantize_classes
from tests.conftest import gaussian_mixture
from tests.test_priors_backends import dit_path, sd_path  # noqa: F401 - module fixtures

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _exact(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, float]:
    """Voronoi masses and distortion in float64 on the CPU (the oracle)."""
    d2 = ((x[:, None, :].astype(np.float64) - centers[None].astype(np.float64)) ** 2).sum(-1)
    masses = np.bincount(d2.argmin(1), minlength=len(centers)) / len(x)
    return masses, float(d2.min(1).mean())


# ---------------------------------------------------------------- quantization


def test_nearest_centroid_on_cuda_equals_cpu(rng):
    x = torch.as_tensor(gaussian_mixture(rng, 3000, 64, 12))
    c = x[:40].clone()
    lab_cpu, sq_cpu = nearest_centroid(x, c)
    lab_gpu, sq_gpu = nearest_centroid(x.cuda(), c.cuda())
    assert lab_gpu.device.type == "cuda"
    assert (lab_gpu.cpu() == lab_cpu).float().mean() >= 0.999  # float ties may differ
    torch.testing.assert_close(sq_gpu.cpu(), sq_cpu, rtol=1e-4, atol=1e-3)


def test_lloyd_from_a_given_grid_on_cuda_equals_cpu(rng):
    x = gaussian_mixture(rng, 2000, 32, 10, spread=4.0)
    init = x[rng.choice(len(x), 10, replace=False)]
    cpu = CLVQ(10, solver="lloyd", init=init, max_iter=100, device="cpu").fit(x)
    gpu = CLVQ(10, solver="lloyd", init=init, max_iter=100, device="cuda").fit(x)
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gpu.weights_, cpu.weights_, atol=1e-3)
    assert gpu.distortion_ == pytest.approx(cpu.distortion_, rel=1e-5)


@pytest.mark.parametrize("k", [10, 50])
def test_default_clvq_on_cuda_is_exact_and_as_good_as_cpu(rng, k):
    x = gaussian_mixture(rng, 1300, 256, 30, spread=2.0)
    cpu = [CLVQ(k, random_state=s, device="cpu").fit(x).distortion_ for s in range(3)]
    gpu = [CLVQ(k, random_state=s, device="cuda").fit(x) for s in range(3)]
    for m in gpu:
        assert m._state.centers.device.type == "cuda"
        masses, dist = _exact(x, m.cluster_centers_)
        np.testing.assert_allclose(m.weights_, masses, atol=1.5 / len(x))  # float32 near-ties
        assert m.distortion_ == pytest.approx(dist, rel=1e-5)
    assert np.median([m.distortion_ for m in gpu]) <= 1.01 * np.median(cpu)


def test_quantize_classes_on_cuda_equals_class_by_class_and_cpu(rng):
    groups = [gaussian_mixture(rng, n, 48, 8, spread=3.0) for n in (700, 1000, 1300)]
    batched = quantize_classes(groups, n_clusters=12, random_state=7, device="cuda")
    cpu = quantize_classes(groups, n_clusters=12, random_state=7, device="cpu")
    for i, (g, est) in enumerate(zip(groups, batched)):
        alone = CLVQ(12, random_state=7 + i, device="cuda").fit(g)
        np.testing.assert_allclose(est.cluster_centers_, alone.cluster_centers_, atol=1e-4)
        masses, dist = _exact(g, est.cluster_centers_)
        np.testing.assert_allclose(est.weights_, masses, atol=1.5 / len(g))
        assert est.distortion_ == pytest.approx(dist, rel=1e-5)
        assert est.distortion_ <= 1.02 * cpu[i].distortion_


# ---------------------------------------------------------------- priors


def _prior_pair(kind: str, sd: object, dit: object, dtype: str | None = None):
    from ddoq.priors import load_prior

    source = {"embedded": "embedded", "sd": sd, "dit": dit}[kind]
    return load_prior(source, "cpu"), load_prior(source, "cuda", dtype=dtype)


@pytest.mark.parametrize("kind", ["embedded", "sd", "dit"])
def test_priors_encode_decode_generate_on_cuda_equal_cpu(kind, sd_path, dit_path):  # noqa: F811
    cpu, gpu = _prior_pair(kind, sd_path, dit_path)
    assert gpu.device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, cpu.channels, cpu.image_size, cpu.image_size, generator=g)
    z_cpu, z_gpu = cpu.encode(images), gpu.encode(images)
    assert z_gpu.device.type == "cuda" and z_gpu.dtype == torch.float32
    torch.testing.assert_close(z_gpu.cpu(), z_cpu, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gpu.decode(z_cpu).cpu(), cpu.decode(z_cpu), rtol=1e-3, atol=1e-3)
    kwargs = {"strength": 0.6, "steps": 5, "seed": 3, "guidance": 2.0}
    x_cpu = cpu.generate(z_cpu, 1, **kwargs)
    x_gpu = gpu.generate(z_cpu, 1, **kwargs)
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["embedded", "sd", "dit"])
def test_priors_in_half_precision_on_cuda(kind, dtype, sd_path, dit_path):  # noqa: F811
    cpu, gpu = _prior_pair(kind, sd_path, dit_path, dtype)
    assert gpu.dtype == getattr(torch, dtype)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(6, cpu.channels, cpu.image_size, cpu.image_size, generator=g)
    z_ref = cpu.encode(images)
    z = gpu.encode(images)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    # half precision: close to float32, not equal (bf16 has 8 bits of mantissa)
    assert float((z.cpu() - z_ref).abs().max()) <= 0.05 * float(z_ref.abs().max()) + 0.05
    x = gpu.decode(z_ref)
    assert x.dtype == torch.float32 and float((x.cpu() - cpu.decode(z_ref)).abs().max()) <= 0.05
    out = gpu.generate(z_ref, 1, strength=0.6, steps=5, seed=3, guidance=2.0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


# ---------------------------------------------------------------- training


def _step_data():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(37, 1, 32, 32, generator=g)
    labels = torch.arange(37) % 10
    weights = torch.rand(37, generator=g) + 0.5
    return images, labels, weights


def _one_step(device: str) -> tuple[dict[str, torch.Tensor], list[float], str | None]:
    """Gradient (left in .grad by fit's single step) and loss, on `device`."""
    from ddoq.train import distributed
    from ddoq.train.loop import TrainConfig, fit

    images, labels, weights = _step_data()
    config = TrainConfig(
        width=16, epochs=1, batch_size=64, augment="none", labels="hard", device=device
    )
    res = fit(config, images, labels, weights=weights, num_classes=10, progress=False)
    grads = {k: p.grad.detach().cpu().clone() for k, p in res.model.named_parameters()}
    return grads, res.losses, distributed.backend()


def _nccl_worker() -> tuple[dict[str, torch.Tensor], list[float], str | None]:
    from ddoq.train import distributed

    with distributed.process_group("cuda"):
        return _one_step("cuda")


def _assert_same_grads(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    scale = torch.cat([g.flatten() for g in b.values()]).norm()
    for name, g in b.items():
        error = float((a[name] - g).norm())
        assert error <= 1e-3 * float(g.norm()) + 1e-5 * float(scale), (name, error)


def test_one_training_step_on_cuda_equals_cpu():
    grads_cpu, losses_cpu, _ = _one_step("cpu")
    grads_gpu, losses_gpu, _ = _one_step("cuda")
    _assert_same_grads(grads_gpu, grads_cpu)
    assert losses_gpu == pytest.approx(losses_cpu, rel=1e-4)


@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason="DDP with nccl needs 2 GPUs: ddoq's process groups have at least 2 processes, "
    "and nccl refuses two ranks on one GPU",
)
def test_ddp_with_nccl_equals_one_process():
    from ddoq.train import distributed

    rank0, rank1 = distributed.launch(_nccl_worker, 2)
    assert rank0[2] == rank1[2] == "nccl"
    for name, g in rank0[0].items():
        assert torch.equal(g, rank1[0][name]), name  # both ranks hold the averaged gradient
    grads_one, losses_one, _ = _one_step("cuda")
    _assert_same_grads(rank0[0], grads_one)
    assert rank0[1] == pytest.approx(losses_one, rel=1e-4)


# ---------------------------------------------------------------- Ray engine


def test_ray_quantize_stage_one_gpu_per_actor(tmp_path, rng):
    ray = pytest.importorskip("ray")
    from ddoq.distillation.config import DistillConfig
    from ddoq.distillation.ray_engine import connect, quantize_stage

    class Latents:  # what the quantize stage reads of a cache entry
        def __init__(self, x: np.ndarray) -> None:
            self.x = torch.as_tensor(x).reshape(len(x), 4, 4, 4)
            self.shape = tuple(self.x.shape)

        def read(self) -> torch.Tensor:
            return self.x

    classes = [0, 1, 2]
    entries = {c: Latents(gaussian_mixture(rng, 300, 64, 5)) for c in classes}
    indices = {c: np.arange(300) for c in classes}
    connect(None, num_cpus=2)  # a local cluster sees the GPU itself
    try:
        config = DistillConfig(ipc=5, device="cuda")
        quantize_stage(config, classes, entries, indices, tmp_path, workers=1)
        assert len(list(tmp_path.glob("class-*.safetensors"))) == len(classes)
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- the app


def test_app_runs_on_cuda_by_default(tmp_path, monkeypatch):
    """The app's pages with the default device (auto): CUDA here, for CLVQ and the prior."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from ddoq.export import load

    monkeypatch.setenv("DDOQ_APP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DDOQ_APP_UMAP", "0")
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=300)
    at.session_state["s_dist_ipc"] = 2
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Computing on **cuda**" in c.value for c in at.sidebar.caption)
    at.button(key="btn_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    live = at.session_state["explore_live"]
    assert str(live.device).startswith("cuda")
    for page in (
        "ddoq/ui/app_pages/decoded.py",
        "ddoq/ui/app_pages/wasserstein.py",
        "ddoq/ui/app_pages/distill.py",
    ):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
    at.button(key="dist_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.session_state["dist_job"].join(300)
    at.run()
    assert str(at.session_state["dist_result"]["config"]["device"]).startswith("cuda")
    assert len(load(at.session_state["dist_result"]["folder"])) == 20
