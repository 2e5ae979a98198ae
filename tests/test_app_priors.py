"""The app's prior picker and colour end to end (issue 19), with AppTest (no browser).

A 64-px RGB folder (3 classes, tests/_colour.py) and a tiny random-weight Stable
Diffusion folder saved with `save_pretrained`: typed in the sidebar's picker, the dataset
is loaded at the prior's size in colour, the latents are diffusers' own, the choice
persists across pages, and the decoded centroids are RGB at the prior's size.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from ddoq.app.state import PIXELS, PRIOR_FOLDER, decode_modes, prior_options
from tests._colour import rgb_folder, tiny_sd

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 180


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddoq-app-priors-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDOQ_CACHE_DIR", str(path))
        mp.setenv("HF_HUB_CACHE", str(path / "hub"))  # an empty hub cache: nothing listed
        mp.setenv("DDOQ_APP_UMAP", "0")
        yield path


@pytest.fixture(scope="module")
def rgb(tmp_path_factory) -> Path:
    return rgb_folder(tmp_path_factory.mktemp("rgb64"))


@pytest.fixture(scope="module")
def grey(tmp_path_factory) -> Path:
    """3 classes of 28-px grey PNGs."""
    from PIL import Image

    root = tmp_path_factory.mktemp("grey28")
    rng = np.random.default_rng(1)
    for c in ("a", "b", "c"):
        (root / c).mkdir()
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    return root


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    return tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")


def _open(page: str | None = None, **settings) -> AppTest:
    """A new session with `settings`, run once (AppTest shows the sidebar on that first
    run only: on its reruns of an `st.navigation` app the sidebar comes back empty)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in settings.items():
        at.session_state[key] = value
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _setup(folder: Path, prior: Path | str, page: str | None = None) -> AppTest:
    """A session on `folder` with `prior` typed in the picker (or a listed option)."""
    typed = str(prior) not in ("embedded", PIXELS)
    return _open(
        page,
        s_source="folder…",
        s_folder=str(folder),
        s_prior=PRIOR_FOLDER if typed else str(prior),
        s_prior_folder=str(prior) if typed else "",
    )


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_options_and_decode_modes():
    assert prior_options(None) == ["auto", "embedded", PRIOR_FOLDER, PIXELS]
    assert prior_options("/t", ["org/a", "/t", "embedded"]) == [
        "auto",
        "embedded",
        "/t",
        "org/a",
        PRIOR_FOLDER,
        PIXELS,
    ]
    assert decode_modes(True, True) == (["vae", "img2img"], None)
    modes, why = decode_modes(True, False)
    assert modes == ["vae"] and "denoiser" in why
    modes, why = decode_modes(False, False)
    assert modes == ["vae"] and "pixels" in why


def test_picker_is_in_the_sidebar_and_a_bad_folder_is_one_line():
    at = _open()
    picker = at.sidebar.selectbox(key="w_s_prior")
    assert picker.label == "Prior"
    assert picker.options == ["auto: embedded", "embedded", PRIOR_FOLDER, PIXELS]
    assert picker.value == "auto"  # the default, as the CLI's --prior auto
    at = _open(s_prior=PRIOR_FOLDER, s_prior_folder="/no/such/model")
    assert at.sidebar.text_input(key="w_s_prior_folder").value == "/no/such/model"
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1 and "/no/such/model" in errors[0] and "\n" not in errors[0]


def test_auto_stands_for_the_prior_trained_for_the_dataset_in_use_now():
    from ddoq.app.state import Choices

    trained = {"/data/photos": "/cache/priors/photos-1"}
    ch = Choices({}, trained.get)
    ch.init()
    assert ch.store["s_prior"] == "auto" and ch.prior == "embedded"  # mnist: none trained
    ch.choose_dataset("/data/photos")
    assert ch.prior == "/cache/priors/photos-1"  # at once, with no rerun in between
    ch.choose_dataset("/data/other")
    assert ch.prior == "embedded"
    ch.choose_prior("embedded")
    ch.choose_dataset("/data/photos")
    assert ch.prior == "embedded"  # a prior picked by name stays picked
    plain = Choices(dict(ch.store))
    plain.choose_prior("auto")
    assert plain.prior == "embedded"  # without a lookup, auto is the embedded prior


def test_auto_is_the_default_and_takes_the_prior_trained_for_the_folder(tmp_path):
    """As ``ddoq distill --prior auto``: the embedded prior until one is trained for the
    folder, then that one, with nothing to pick."""
    from ddoq.priors.catalog import prior_dir_for
    from ddoq.priors.training import config_for_dataset, train_prior

    folder = rgb_folder(tmp_path / "mine", per_class=8, size=32)
    at = _open(s_source="folder…", s_folder=str(folder))
    picker = at.sidebar.selectbox(key="w_s_prior")
    assert picker.value == "auto" and picker.options[0] == "auto: embedded"
    assert "Computing on prior **embedded**" in _captions(at)
    config = config_for_dataset(folder, vae_epochs=1, dit_steps=2, limit_per_class=4)
    trained = train_prior(config).output_dir
    assert Path(trained) == prior_dir_for(folder)
    at = _open(s_source="folder…", s_folder=str(folder))  # a new visitor
    picker = at.sidebar.selectbox(key="w_s_prior")
    assert picker.value == "auto" and picker.options[0] == "auto: trained for this dataset"
    assert f"Computing on prior **{trained}**" in _captions(at)
    assert "32 px RGB" in _captions(at)


def test_rgb_folder_follows_the_sd_prior(rgb, sd):
    """Latents of the class are diffusers' own VAE on the folder's 64-px RGB images."""
    from diffusers import AutoencoderKL
    from PIL import Image

    from app_pages._common import class_points

    at = _setup(rgb, sd)
    line = _captions(at)
    assert f"Computing on prior **{sd}** (stable-diffusion): 64 px RGB images" in line
    assert "latent 4×8×8" in line
    assert "stable-diffusion, 64 px RGB, latent 4×8×8" in "\n".join(
        c.value for c in at.sidebar.caption
    )
    pts = class_points(str(rgb), str(sd), 0, "cpu")
    assert pts.points.shape[1] == 4 * 8 * 8
    # independently: PIL -> [-1, 1] -> diffusers' AutoencoderKL, mode * scaling_factor
    from ddoq.data import load_dataset

    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae").eval()
    ds = load_dataset(str(rgb), "train")  # its file list only
    files = [Path(ds.path(int(i))) for i in pts.indices]
    assert {f.parent.name for f in files} == {"blue"}  # class 0: folders in sorted order
    x = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    x = torch.as_tensor(x).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        z = vae.encode(x * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    np.testing.assert_allclose(pts.points, z.flatten(1).numpy(), atol=1e-4)

    # the choice persists across pages, with the same caption line
    at.switch_page("ddoq/ui/app_pages/wasserstein.py").run()
    assert at.session_state["s_prior_folder"] == str(sd)
    assert "64 px RGB images, latent 4×8×8" in _captions(at)
    at.switch_page("ddoq/ui/app_pages/distill.py").run()
    assert not at.exception
    assert "64 px RGB images, latent 4×8×8" in _captions(at)
    assert at.radio(key="w_s_dist_decode").options == ["vae", "img2img"]


def test_decoded_images_are_rgb_at_the_priors_size(rgb, sd):
    at = _setup(rgb, sd, "ddoq/ui/app_pages/decoded.py")
    assert at.radio(key="w_s_dec_mode").options == ["vae", "img2img"]
    at.slider(key="dec_k").set_value(3).run()
    at.button(key="dec_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["dec_result"]
    images, nearest = result["images"], result["nearest"]
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    assert nearest.shape == (3, 3, 64, 64, 3)
    # the nearest real images keep the folder's colour: class 0, blue, is blue
    assert nearest[..., 2].mean() > nearest[..., 0].mean() + 20
    # decoded by the random-weight VAE: three channels, not one repeated
    assert not np.array_equal(images[..., 0], images[..., 1])


def test_grey_prior_notes_colour_and_rgb_prior_repeats_grey(rgb, grey, sd):
    from app_pages._common import dataset_for, get_prior

    at = _setup(rgb, "embedded")
    notes = [i.value for i in at.info]
    assert any("in colour but the 'embedded' prior is greyscale" in n for n in notes), notes
    assert "32 px grey images" in _captions(at)

    at = _setup(grey, sd)
    assert not any("greyscale" in i.value for i in at.info)
    assert "64 px RGB images" in _captions(at)
    ds = dataset_for(str(grey), get_prior(str(sd), "cpu"))
    x = ds.images([0, 1])
    assert x.shape == (2, 3, 64, 64)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_raw_pixels_say_why_nothing_is_decoded(rgb):
    at = _setup(rgb, PIXELS, "ddoq/ui/app_pages/decoded.py")
    assert not at.exception
    assert "Computing on **raw pixels**" in _captions(at)
    assert "nothing to decode" in _captions(at)
