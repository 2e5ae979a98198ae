"""Benchmark: encoding the whole embedded MNIST train split with the embedded prior.

Times `ddoq.encode.encode_dataset` without the cache (all 4,000 images through the VAE
encoder, class by class), with a warm cache (reading the safetensors files back), and the
bare `prior.encode` on one batch, at 1 and 2 torch threads. Target (issue 3): under 30 s
on 2 cores. Writes section "encode" of BENCHMARKS.md.

Run: ``python benchmarks/encode.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _report import machine_line, markdown_table, median_time, write_section

from ddoq.data import load_dataset
from ddoq.encode import encode_dataset
from ddoq.priors import load_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    machine = machine_line()  # before the loop changes the thread count
    prior = load_prior("embedded")
    dataset = load_dataset("mnist", split="train", image_size=prior.image_size)
    n = len(dataset)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        cold, latents = median_time(
            lambda: encode_dataset(dataset, prior, cache_dir=False), repeats=args.repeats
        )
        with tempfile.TemporaryDirectory() as tmp:
            encode_dataset(dataset, prior, cache_dir=tmp)
            warm, _ = median_time(
                lambda tmp=tmp: encode_dataset(dataset, prior, cache_dir=tmp), repeats=args.repeats
            )
        batch = dataset.images(list(range(256)))
        bare, _ = median_time(lambda batch=batch: prior.encode(batch), repeats=args.repeats)
        count = sum(len(v) for v in latents.values())
        assert count == n
        rows.append(
            [
                threads,
                n,
                f"{cold:.2f}",
                f"{n / cold:.0f}",
                f"{warm:.3f}",
                f"{bare * 1000:.0f}",
                "yes" if cold < 30 else "no",
            ]
        )
    header = [
        "threads",
        "images",
        "encode, no cache (s)",
        "images/s",
        "warm cache (s)",
        "VAE encode, 256 images (ms)",
        "< 30 s",
    ]
    table = markdown_table(header, rows)
    body = (
        "## Encoding the embedded train split (`benchmarks/encode.py`)\n\n"
        f"{machine}\n\n"
        f"Embedded prior ({prior.latent_shape} latents from {prior.image_size} x "
        f"{prior.image_size} images), `encode_dataset` over the {n} train images, "
        f"median of {args.repeats} repeats (data already decoded in memory).\n\n"
        f"{table}\n"
    )
    print(table)
    write_section("encode", body)


if __name__ == "__main__":
    main()
