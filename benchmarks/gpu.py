"""Benchmark the GPU paths: batched CLVQ, VAE encoding and DiT img2img, on one GPU.

1. Quantization of a synthetic ImageNet-shaped latent set (1,000 classes x 1,300 latents
   of 4x32x32, Stable Diffusion's VAE shape at 256 px; a Dirichlet-weighted Gaussian
   mixture per class) with `ddoq.quantize.quantize_classes` (all classes in one batched
   call, the default quantizer) at K = 10, 50, 100, against a plain batched torch Lloyd
   (K random points, 20 iterations, no early stop) and the GEMM bound (the method's
   assignment passes x the time of one batched (C, N, d) x (C, d, K) float32 product).
2. Encoding throughput of an `AutoencoderKL` with Stable Diffusion's architecture at
   256 px (random weights, same shapes and cost), float32 and bfloat16.
3. img2img throughput (`GenerativePrior.generate`: strength 0.7 of 50 DDIM steps,
   guidance 4, VAE decode included) of a DiT-XL/2-shaped `DiTTransformer2DModel`
   (random weights, 1,000 classes), float32 and bfloat16.
4. Peak GPU memory of each part.

Run: `python benchmarks/gpu.py` on a machine with a GPU (about 3 minutes on one H200);
`--quick --device cpu` runs every part at toy sizes (a smoke test, BENCHMARKS.md untouched).
`--markdown FILE` also writes the report to FILE.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _report import clvq_passes, machine_line, markdown_table, write_section

from ddoq.quantize import quantize_classes
from ddoq.quantize._torch import _assign_batched


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}"


def synthetic_latents(
    classes: int, n: int, d: int, device: torch.device, modes: int = 30, seed: int = 0
) -> torch.Tensor:
    """(classes, n, d) float32: per class, `modes` Gaussian modes with Dirichlet weights."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty((classes, n, d), device=device)
    for c in range(classes):
        means = 2.0 * torch.randn(modes, d, generator=g, device=device)
        w = torch.distributions.Dirichlet(torch.ones(modes)).sample().to(device)
        which = torch.multinomial(w, n, replacement=True, generator=g)
        out[c] = means[which] + 0.7 * torch.randn(n, d, generator=g, device=device)
    return out


def torch_lloyd(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Plain batched Lloyd: K random points per class, `iters` full iterations."""
    n_classes, n, d = x.shape
    g = torch.Generator(device=x.device).manual_seed(seed)
    rows = torch.arange(n_classes, device=x.device)[:, None]
    pick = torch.rand(n_classes, n, generator=g, device=x.device).argsort(1)[:, :k]
    centers = x[rows, pick]
    offsets = k * rows
    for _ in range(iters):
        dist = torch.baddbmm(
            centers.square().sum(-1)[:, None, :], x, centers.transpose(1, 2), alpha=-2.0
        )
        flat = (dist.argmin(-1) + offsets).reshape(-1)
        counts = torch.bincount(flat, minlength=n_classes * k).to(x.dtype).view(n_classes, k)
        sums = torch.zeros((n_classes * k, d), device=x.device).index_add_(
            0, flat, x.reshape(-1, d)
        )
        new = sums.view(n_classes, k, d) / counts.clamp_min(1.0)[..., None]
        centers = torch.where(counts[..., None] > 0, new, centers)
    return centers


def gemm_pass_seconds(x: torch.Tensor, k: int) -> float:
    """Time of one batched assignment product (C, N, d) x (C, d, K), best of 5."""
    c = x[:, :k].contiguous()
    best = float("inf")
    for _ in range(6):
        seconds, _ = timed(lambda: torch.bmm(x, c.transpose(1, 2)), x.device)
        best = min(best, seconds)
    return best


def quantize_part(classes: int, n: int, shape: tuple, ks: list[int], device) -> list[list]:
    d = int(np.prod(shape))
    x = synthetic_latents(classes, n, d, device)
    groups = list(x)  # per-class views, no copy
    quantize_classes(groups[:2], n_clusters=ks[0], random_state=0, device=device)  # warm-up
    torch_lloyd(x[:2], ks[0])
    rows = []
    for k in ks:
        peak_reset(device)
        seconds, models = timed(
            lambda k=k: quantize_classes(groups, n_clusters=k, random_state=0, device=device),
            device,
        )
        peak = peak_gib(device)
        ours = float(np.mean([m.distortion_ for m in models]))
        passes = float(np.mean([clvq_passes(m, n, d) for m in models]))
        one_pass = gemm_pass_seconds(x, k)
        lloyd_s, centers = timed(lambda k=k: torch_lloyd(x, k), device)
        lloyd_d = float(_assign_batched(x, centers)[1].mean())
        rows.append(
            [
                f"K={k}",
                f"{seconds:.2f}",
                f"{1000 * seconds / classes:.2f}",
                f"{passes:.1f}",
                f"{seconds / (passes * one_pass):.1f}x",
                f"{lloyd_s:.2f}",
                f"{lloyd_d / ours:.4f}",
                f"{1000 * one_pass:.1f}",
                peak,
            ]
        )
        print(rows[-1], flush=True)
        del models
    return rows


def big_vae(quick: bool):
    from diffusers import AutoencoderKL

    if quick:
        return AutoencoderKL(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=16,
            layers_per_block=1,
        )
    # Stable Diffusion v1.x's VAE (and DiT's sd-vae-ft-ema): the same config, random weights
    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=256,
        scaling_factor=0.18215,
    )


def dit_prior(device: torch.device, quick: bool):
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    from ddoq.priors.dit import DiTPrior

    torch.manual_seed(0)
    vae = big_vae(quick)
    if quick:
        transformer = DiTTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=4,
            out_channels=8,
            num_layers=2,
            sample_size=8,
            patch_size=2,
            num_embeds_ada_norm=10,
            norm_num_groups=8,
        )
    else:  # DiT-XL/2 at 256 px: 28 blocks, 16 heads x 72, patch 2 on 32x32x4 latents
        transformer = DiTTransformer2DModel(
            num_attention_heads=16,
            attention_head_dim=72,
            in_channels=4,
            out_channels=8,
            num_layers=28,
            sample_size=32,
            patch_size=2,
            num_embeds_ada_norm=1000,
        )
    n = int(transformer.config.num_embeds_ada_norm)
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False)
    return DiTPrior(
        vae=vae,
        scheduler=scheduler,
        denoiser=transformer,
        class_names=[str(i) for i in range(n)],
        source="random DiT-XL/2-shaped",
        fingerprint="random",
        device=device,
    )


def prior_part(device: torch.device, quick: bool) -> list[list]:
    prior = dit_prior(device, quick)
    params = sum(p.numel() for p in prior.denoiser.parameters()) / 1e6
    rows = []
    size = prior.image_size
    for dtype in (torch.float32, torch.bfloat16):
        prior.dtype = dtype
        n_enc = 8 if quick else 256
        images = torch.rand(n_enc, 3, size, size, device=device)
        prior.encode(images[:4], batch_size=4)  # warm-up
        peak_reset(device)
        enc_s, latents = timed(lambda x=images: prior.encode(x, batch_size=64), device)
        enc_peak = peak_gib(device)
        n_gen = 4 if quick else (32 if dtype == torch.float32 else 128)
        z = latents[:n_gen].repeat(int(np.ceil(n_gen / len(latents))), 1, 1, 1)[:n_gen]
        labels = np.arange(n_gen) % prior.num_classes
        steps = 10 if quick else 50
        prior.generate(z[:2], labels[:2], strength=0.1, steps=10, guidance=4.0)  # warm-up
        peak_reset(device)
        gen_s, _ = timed(
            lambda z=z, y=labels, s=steps: prior.generate(
                z, y, strength=0.7, steps=s, guidance=4.0, batch_size=64
            ),
            device,
        )
        rows.append(
            [
                str(dtype).removeprefix("torch."),
                f"{n_enc / enc_s:.0f}",
                enc_peak,
                f"{n_gen / gen_s:.1f}",
                f"{round(0.7 * steps)}",
                peak_gib(device),
            ]
        )
        print(rows[-1], flush=True)
    return rows, params, size


QUANT_HEADER = [
    "K",
    "ddoq s (all classes)",
    "ms / class",
    "passes",
    "time / GEMM bound",
    "torch Lloyd (20 it.) s",
    "torch Lloyd D / ddoq D",
    "one pass ms",
    "peak GiB",
]
PRIOR_HEADER = [
    "compute dtype",
    "VAE encode img/s (256 px)",
    "peak GiB",
    "DiT img2img img/s",
    "denoising steps",
    "peak GiB",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, BENCHMARKS.md untouched")
    parser.add_argument("--device", default="auto", help="cuda (default when present) or cpu")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    from ddoq.quantize import resolve_device

    device = resolve_device(args.device)
    start = time.perf_counter()
    if args.quick:
        classes, n, shape, ks = 4, 200, (4, 8, 8), [5, 10]
    else:
        classes, n, shape, ks = 1000, 1300, (4, 32, 32), [10, 50, 100]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}", flush=True)
    q_rows = quantize_part(classes, n, shape, ks, device)
    p_rows, params, size = prior_part(device, args.quick)
    body = "\n".join(
        [
            "## GPU (`benchmarks/gpu.py`)",
            "",
            f"Device: {name}, torch {torch.__version__}; host: {machine_line()}. "
            f"Total run {time.perf_counter() - start:.0f} s.",
            "",
            f"Quantization of {classes} synthetic classes x {n} latents of "
            f"{'x'.join(map(str, shape))} (float32, TF32 off), all classes in one "
            "`quantize_classes` call with the default quantizer (k-means++ in a 64-d "
            "count sketch on every point, one whole-class CLVQ step, Lloyd polish). Passes = "
            "the assignment passes' "
            "worth of matrix products made (seeding, mini-batches, polish, final pass); "
            "bound = passes x one batched product's time.",
            "",
            markdown_table(QUANT_HEADER, q_rows),
            "",
            f"Priors at {size} px with random weights: an `AutoencoderKL` with Stable "
            f"Diffusion's architecture, and a DiT-XL/2-shaped transformer ({params:.0f}M "
            "parameters); img2img = `generate` (strength 0.7 of 50 DDIM steps, guidance 4, "
            "so 2 transformer passes per step, VAE decode included); bfloat16 = autocast.",
            "",
            markdown_table(PRIOR_HEADER, p_rows),
        ]
    )
    print(body, flush=True)
    if args.markdown:
        args.markdown.write_text(body + "\n")
    if not args.quick:
        write_section("gpu", body)


if __name__ == "__main__":
    main()
