"""The Streamlit app, page by page, with streamlit.testing.v1.AppTest (no browser).

AppTest does not fire `st.fragment(run_every=...)` timers: the live tick itself is tested
in tests/test_live.py; here each button press reruns the page once, which ticks once.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 120


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """One temporary DDOQ_CACHE_DIR (MNIST arrays, projections) for the module."""
    path = tmp_path_factory.mktemp("ddoq-app-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDOQ_CACHE_DIR", str(path))
        mp.setenv("DDOQ_APP_UMAP", "1")
        yield path


def _open(page: str | None = None, **settings) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in settings.items():
        at.session_state[key] = value
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _distil(at: AppTest) -> AppTest:
    """Press Distil (the job is queued), wait for the job, and draw its result."""
    at.button(key="dist_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    job = at.session_state["dist_job"]
    assert job.join(300), job.status
    assert job.state == "done", job.error
    return at.run()


def _charts(at: AppTest) -> list:
    """Every chart in page order: Plotly figures and the live views' Vega-Lite charts."""
    found: list = []

    def walk(node) -> None:
        if getattr(node, "type", None) in ("plotly_chart", "vega_lite_chart"):
            found.append(node)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_explore_opens_with_a_map_and_controls():
    at = _open()
    assert at.title[0].value == "Explore a class"
    # the third is the "Train a prior for this dataset" panel's image size
    assert [s.label for s in at.main.selectbox] == ["Dataset", "Class", "Image size"]
    assert [s.label for s in at.sidebar.selectbox] == ["Prior", "Device"]
    assert at.slider(key="w_s_k").value == 10
    assert any("Computing on" in c.value for c in at.sidebar.caption)
    assert [b.label for b in at.button] == [
        "Train a prior for this dataset",
        "Run",
        "Pause",
        "Resume",
        "Step",
        "Reset",
    ]
    assert len(_charts(at)) == 1  # the map of the class before any step
    assert any("Run" in i.value for i in at.info)
    assert not at.error


def test_explore_run_pause_step_reset():
    at = _open()
    at.button(key="btn_run").click().run()
    assert _metric(at, "CLVQ steps") == "5"
    assert at.session_state["explore_running"]
    assert len(_charts(at)) == 2  # map with centroids + distortion curve
    at.button(key="btn_pause").click().run()  # Pause (reruns without a step)
    assert not at.session_state["explore_running"]
    assert _metric(at, "CLVQ steps") == "5"
    at.button(key="btn_step").click().run()  # Step
    assert _metric(at, "CLVQ steps") == "10"
    at.button(key="btn_resume").click().run()  # Resume
    assert at.session_state["explore_running"]
    at.button(key="btn_reset").click().run()  # Reset
    assert not at.session_state["explore_running"]
    assert not at.metric and any("Run" in i.value for i in at.info)


def test_explore_overlay_and_k_change_restart_the_run():
    at = _open()
    at.button(key="btn_run").click().run()
    at.slider(key="w_s_k").set_value(4).run()
    assert at.session_state["s_k"] == 4 and not at.session_state["explore_running"]
    at.toggle(key="w_s_overlay").set_value(True).run()
    at.button(key="btn_run").click().run()
    assert not at.exception
    assert at.session_state["explore_live"].snapshot.centers.shape[0] == 4


def test_settings_persist_across_pages():
    at = _open()
    at.slider(key="w_s_k").set_value(7).run()
    at.selectbox(key="w_s_class").set_value(3).run()
    at.switch_page("ddoq/ui/app_pages/teach.py").run()
    at.switch_page("ddoq/ui/app_pages/wasserstein.py").run()
    assert at.slider(key="w2_k").value == 7
    assert at.selectbox(key="w_s_class").value == 3
    at.slider(key="w2_k").set_value(8).run()
    at.switch_page("ddoq/ui/app_pages/explore.py").run()
    assert at.slider(key="w_s_k").value == 8


def test_explore_umap_runs_in_the_background(monkeypatch):
    import threading

    import app_pages._common as common

    release = threading.Event()
    real_project = common.project

    def slow_project(points, method="pca", **kw):
        if method == "umap":
            release.wait(30)
            return real_project(points, "pca", cache_dir=False)
        return real_project(points, method, **kw)

    monkeypatch.setattr(common, "project", slow_project)
    common.umap_job.clear()
    # the prior the page computes on (the picker's "auto" is not a prior name)
    at = _open(s_class=5, s_view="UMAP", s_prior="embedded")
    assert any("background" in i.value for i in at.info)
    assert len(_charts(at)) == 1  # PCA meanwhile
    release.set()
    at.session_state["s_view"] = "UMAP"
    common.umap_job("mnist", "embedded", 5).result(30)
    at.run()
    assert not any("background" in i.value for i in at.info)
    common.umap_job.clear()


def test_explore_uses_a_cached_umap_embedding(cache_dir):
    from app_pages._common import class_points, umap_job
    from ddoq.app.projection import _FORMAT, _params, _write, cache_path, data_fingerprint

    # the prior the page computes on, so that the page's job finds the embedding written
    # here (the picker's "auto" is not a prior name: class_points would read pixels)
    at = _open(s_class=6, s_prior="embedded")
    pts = class_points("mnist", "embedded", 6).points
    fp, params = data_fingerprint(pts), _params("umap", 15, 0.1, 0)
    fake = np.random.default_rng(0).normal(size=(len(pts), 2)).astype(np.float32)
    meta = {"format": _FORMAT, "fingerprint": fp, "params": params}
    _write(cache_path(fp, params, cache_dir), {"embedding": fake}, meta)
    umap_job.clear()
    at.radio(key="w_s_view").set_value("UMAP").run()
    # the page's own job: read from the disk cache, no UMAP fit (nor numba compilation)
    assert umap_job("mnist", "embedded", 6).result(30).from_cache
    at.run()
    at.button(key="btn_run").click().run()
    assert not at.exception
    title = _charts(at)[0].proto.spec
    assert "UMAP map" in title
    umap_job.clear()


def test_bad_folder_shows_a_readable_error():
    at = _open()
    at.selectbox(key="w_s_source").set_value("folder…").run()
    at.text_input(key="w_s_folder").set_value("/no/such/folder").run()
    assert not at.exception
    assert at.error and "neither an embedded dataset" in at.error[0].value


def test_teach_page_runs_clvq_and_compares_w2():
    at = _open("ddoq/ui/app_pages/teach.py")
    assert at.title[0].value.startswith("Teach")
    assert [s.label for s in at.main.selectbox] == ["Distribution μ", "Step rule"]
    assert len(_charts(at)) == 2  # empty playground map + distortion against K
    assert at.latex or any("K^{-2/d}" in m.value for m in at.markdown)
    at.button(key="teach_run").click().run()
    assert not at.exception
    weighted = float(_metric(at, "W2, weighted"))
    uniform = float(_metric(at, "W2, uniform 1/K"))
    assert weighted < uniform
    assert len(_charts(at)) == 4  # Voronoi map, weights, distortion, distortion vs K
    at.selectbox(key="w_s_teach_dist").set_value("ring").run()
    at.button(key="teach_step").click().run()
    assert _metric(at, "W2, uniform 1/K")


def test_wasserstein_page_table_curve_and_pushforward_note():
    at = _open("ddoq/ui/app_pages/wasserstein.py", s_k=5)
    assert at.slider(key="w2_k").value == 5
    assert any("Compute W2" in i.value for i in at.info)
    at.button(key="w2_compute").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert len(table) == 1
    row = table.iloc[0]
    assert row["W2 DDOQ (weighted)"] <= row["W2 D4M (uniform)"] + 1e-9
    assert len(_charts(at)) == 1
    at.button(key="w2_curve_btn").click().run()
    assert not at.exception
    assert len(at.session_state["w2_curve"]["curve"]) == 7
    assert len(_charts(at)) == 2
    if at.session_state["s_prior"] in ("auto", "embedded") and not any(
        "could not be loaded" in i.value for i in at.info
    ):
        at.button(key="w2_push").click().run()
        assert not at.exception and not at.error
        push = at.dataframe[1].value
        assert list(push["space"]) == ["latent", "pixel (decoded)"]
        assert push["W2 weighted"].iloc[0] <= push["W2 uniform"].iloc[0] + 1e-9
    else:
        assert any("Needs a prior" in i.value for i in at.info)


def test_decoded_page_shows_centroids_sorted_by_weight():
    at = _open("ddoq/ui/app_pages/decoded.py", s_k=4)
    assert at.title[0].value == "Decoded images"
    assert at.button(key="dec_go").label == "Decode"
    assert any("Press **Decode**" in i.value for i in at.info)
    at.button(key="dec_go").click().run()
    assert not at.exception and not at.error
    result = at.session_state["dec_result"]
    assert len(result["images"]) == 4 and result["nearest"].shape[:2] == (4, 3)
    assert len(at.get("image")) == 8  # a decoded image and a strip of nearest real ones each
    shown = [
        float(m.value.split("=")[1].split("*")[0]) for m in at.markdown if "mass = " in m.value
    ]
    assert shown == sorted(shown, reverse=True) and sum(shown) == pytest.approx(1, abs=2e-3)
    if result["space"] == "latent":
        at.radio(key="w_s_dec_mode").set_value("img2img").run()
        at.select_slider(key="w_s_dec_steps").set_value(10).run()
        at.button(key="dec_go").click().run()
        assert not at.exception and not at.error
        assert at.session_state["dec_result"]["key"][-1] == "img2img"


def test_decoded_page_uses_the_explore_run():
    at = _open(s_k=3)
    at.button(key="btn_run").click().run()
    steps = at.session_state["explore_live"].snapshot.step
    at.switch_page("ddoq/ui/app_pages/decoded.py").run()
    at.toggle(key="dec_use_live").set_value(True).run()
    assert any(f"({steps} CLVQ steps)" in c.value for c in at.caption)
    at.button(key="dec_go").click().run()
    np.testing.assert_array_equal(
        at.session_state["dec_result"]["weights"], at.session_state["explore_live"].snapshot.masses
    )


def test_decoded_page_shows_what_distill_exports():
    """By default the Decoded page decodes the centroids `ddoq distill` writes for the class."""
    from ddoq import DistillConfig, distill

    at = _open(s_k=3, s_class=2)
    at.button(key="btn_run").click().run()  # an Explore run exists, but is not the default
    at.switch_page("ddoq/ui/app_pages/decoded.py").run()
    assert any("Distill and export** writes" in c.value for c in at.caption)
    at.button(key="dec_go").click().run()
    assert not at.exception and not at.error
    result = distill(DistillConfig(ipc=3, teacher=None), progress=False)
    rows = (result.labels == 2).nonzero().flatten()
    np.testing.assert_allclose(
        np.sort(at.session_state["dec_result"]["weights"]),
        np.sort(result.masses[rows].numpy()),
        rtol=1e-6,
    )


def test_distill_page_exports_a_zip_per_session(tmp_path, monkeypatch):
    import zipfile

    from ddoq.export import load

    monkeypatch.setenv("DDOQ_APP_RUNS", str(tmp_path / "runs"))
    at = _open("ddoq/ui/app_pages/distill.py", s_dist_ipc=2)
    assert at.title[0].value == "Distill and export"
    assert not at.warning, [w.value for w in at.warning]  # the shipped prior always loads
    assert [s.label for s in at.main.selectbox] == ["Method"]
    _distil(at)
    assert not at.exception and not at.error
    res = at.session_state["dist_result"]
    folder = Path(res["folder"])
    assert folder.parent.parent == tmp_path / "runs" / at.session_state["session_id"] / ""
    assert len(load(folder)) == 20
    with zipfile.ZipFile(res["zip"]) as z:
        names = set(z.namelist())
    assert {"manifest.json", "metadata.jsonl", "soft_labels.safetensors"} <= names
    assert sum(n.startswith("images/") and n.endswith(".png") for n in names) == 20
    assert _metric(at, "Images") == "20"
    assert at.get("download_button")
    # a second session writes elsewhere
    other = _open("ddoq/ui/app_pages/distill.py", s_dist_ipc=2)
    assert other.session_state["session_id"] != at.session_state["session_id"]


def test_train_page_runs_a_tiny_job_in_the_background(tmp_path, monkeypatch):
    monkeypatch.setenv("DDOQ_APP_RUNS", str(tmp_path / "runs"))
    at = _open(
        "ddoq/ui/app_pages/train.py",
        s_train_ipc=1,
        s_train_epochs=2,
        s_train_methods=["ddoq", "random"],
    )
    assert at.title[0].value == "Train a student"
    assert not at.warning, [w.value for w in at.warning]  # the shipped prior always loads
    assert at.multiselect(key="w_s_train_methods").value == ["ddoq", "random"]
    assert any("Start training" in i.value for i in at.info)
    at.button(key="train_go").click().run()
    assert not at.exception and not at.error
    job = at.session_state["train_job"]
    assert at.button(key="train_go").disabled  # drawn as not clickable while it runs
    assert at.get("progress")
    at.switch_page("ddoq/ui/app_pages/teach.py").run()  # the job survives page switches
    job.join(180)
    assert job.status == "done", job.error
    at.switch_page("ddoq/ui/app_pages/train.py").run()
    assert not at.exception and not at.error
    runs = at.dataframe[0].value
    assert sorted(runs["method"]) == ["ddoq", "random"]
    assert (runs["epochs"] == 2).all() and runs["test accuracy"].between(0, 1).all()
    assert len(_charts(at)) == 2  # accuracy and loss curves
    assert all(Path(f, "manifest.json").is_file() for f in runs["folder"])


def test_teach_page_your_own_points():
    at = _open("ddoq/ui/app_pages/teach.py", s_teach_k=8)
    at.selectbox(key="w_s_teach_dist").set_value("your own points").run()
    assert not at.exception and not at.error
    assert len(_charts(at)) == 1  # the canvas only
    assert any("has 0 points" in i.value for i in at.info)
    # AppTest cannot click plotly: inject what a click on the lattice sends back
    click = {"curve_number": 0, "point_index": 3, "x": -1.0, "y": 1.0}
    at.session_state["teach_canvas_0"] = {"selection": {"points": [click]}}
    at.slider(key="w_s_teach_per_click").set_value(5).run()
    assert not at.exception
    assert at.session_state["teach_clicks"] == [[(-1.0, 1.0)]]
    assert at.session_state["teach_canvas"] == 1  # the selection was consumed
    assert any("has 5 points" in i.value and "K = 8" in i.value for i in at.info), [
        i.value for i in at.info
    ]
    # two more actions (a click and a lasso over two nodes), then run CLVQ on 15 points
    at.session_state["teach_clicks"] = [[(-1.0, 1.0)], [(1.0, -1.0)], [(1.0, 1.0), (1.5, 1.0)]]
    at.slider(key="w_s_teach_per_click").set_value(30).run()
    assert not at.exception and [i.value for i in at.info] == [
        "Press **Run** to watch CLVQ place the K centroids."
    ]
    at.button(key="teach_run").click().run()
    assert not at.exception and not at.error
    live = at.session_state["teach_live"]
    assert live.points.shape == (120, 2) and live.n_clusters == 8
    weighted = float(_metric(at, "W2, weighted"))
    assert weighted <= float(_metric(at, "W2, uniform 1/K")) + 1e-6
    assert len(_charts(at)) == 5  # canvas, Voronoi map, weights, distortion, distortion vs K
    at.button(key="teach_undo").click().run()
    assert len(at.session_state["teach_clicks"]) == 2
    assert at.session_state["teach_live"].points.shape == (60, 2)
    at.button(key="teach_clear").click().run()
    assert not at.exception and at.session_state["teach_clicks"] == []
    assert any("has 0 points" in i.value for i in at.info)


# -- Issue 10: one model of a session's choices, your own folder, limits -------------------


def _folder(root: Path, sizes: dict[str, int], corrupt: bool = True) -> Path:
    """An ImageFolder of PNG digits from the embedded MNIST: class name -> images."""
    from PIL import Image

    from ddoq.data import load_dataset

    mnist = load_dataset("mnist")
    for digit, (name, n) in zip((1, 3, 7, 0, 2), sizes.items(), strict=False):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        images = mnist.images(mnist.class_indices(digit)[:n])
        for i, im in enumerate(images):
            Image.fromarray((im[0].numpy() * 255).astype(np.uint8)).save(folder / f"{i}.png")
    if corrupt:
        (root / next(iter(sizes)) / "corrupt.png").write_bytes(b"not a png")
    return root


@pytest.fixture(scope="module")
def folder3(tmp_path_factory) -> Path:
    """3 classes x 60 PNGs (48 for training), and one corrupt file."""
    return _folder(tmp_path_factory.mktemp("folder3"), {"one": 60, "three": 60, "seven": 60})


@pytest.fixture(scope="module")
def folder_tiny(tmp_path_factory) -> Path:
    """A folder whose class 'lonely' has a single training image."""
    root = tmp_path_factory.mktemp("tiny")
    return _folder(root, {"one": 30, "lonely": 2, "seven": 30}, corrupt=False)


def _choose_folder(at: AppTest, folder: Path) -> AppTest:
    at.selectbox(key="w_s_source").set_value("folder…").run()
    at.text_input(key="w_s_folder").set_value(str(folder)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_distill_uses_this_sessions_dataset_and_not_another_sessions(folder3):
    a = _choose_folder(_open(), folder3)
    a.switch_page("ddoq/ui/app_pages/distill.py").run()
    assert f"Dataset **{folder3}**" in _captions(a)
    b = _open("ddoq/ui/app_pages/distill.py")  # a new browser session starts from the defaults
    assert "Dataset **mnist**" in _captions(b)
    b.switch_page("ddoq/ui/app_pages/explore.py").run()
    b.selectbox(key="w_s_source").set_value("digits").run()
    b.switch_page("ddoq/ui/app_pages/train.py").run()
    assert "Dataset **digits**" in _captions(b)
    a.run()
    assert f"Dataset **{folder3}**" in _captions(a)
    # the picker is in the sidebar, which AppTest shows on a session's first run only
    b.session_state["s_prior"] = "none (raw pixels)"
    b.switch_page("ddoq/ui/app_pages/distill.py").run()
    assert b.warning and "needs a prior" in b.warning[0].value


def test_own_folder_keeps_class_and_k_and_every_control_works(folder3):
    at = _open(s_class=2)
    at = _choose_folder(at, folder3)
    assert at.selectbox(key="w_s_class").value == 2
    assert "three" in at.selectbox(key="w_s_class").format_func(2)  # sorted names
    assert at.slider(key="w_s_k").value == 10 and at.slider(key="w_s_k").max == 48
    expander = next(e for e in at.expander if "skipped" in e.label)
    assert "corrupt.png" in "".join(m.value for m in expander.markdown)
    at.button(key="btn_run").click().run()
    assert _metric(at, "CLVQ steps") == "5"
    at.button(key="btn_pause").click().run()
    at.button(key="btn_step").click().run()
    at.toggle(key="w_s_overlay").set_value(True).run()
    at.selectbox(key="w_s_class").set_value(0).run()
    assert not at.exception and not at.error
    for page in (
        "ddoq/ui/app_pages/decoded.py",
        "ddoq/ui/app_pages/wasserstein.py",
        "ddoq/ui/app_pages/explore.py",
    ):
        at.switch_page(page).run()
        assert not at.exception and not at.error, page
        assert at.selectbox(key="w_s_class").value == 0
    at.session_state["s_class"] = "1"  # what a browser once sent back: a string
    at.run()
    assert not at.exception and at.selectbox(key="w_s_class").value == 1
    at.selectbox(key="w_s_source").set_value("mnist").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="w_s_class").value == 1 and at.slider(key="w_s_k").max == 100


def test_a_corrected_folder_path_is_kept(folder3):
    at = _open()
    at.selectbox(key="w_s_source").set_value("folder…").run()
    at.text_input(key="w_s_folder").set_value(str(folder3) + "-typo").run()
    assert at.error and "neither an embedded dataset" in at.error[0].value
    at.text_input(key="w_s_folder").set_value(str(folder3)).run()
    assert not at.exception and not at.error
    assert at.text_input(key="w_s_folder").value == str(folder3)
    assert at.selectbox(key="w_s_class").format_func(0).startswith("0: one")


def test_k_100_on_explore_then_decoded():
    at = _open(s_k=100)
    assert at.slider(key="w_s_k").value == 100
    at.switch_page("ddoq/ui/app_pages/decoded.py").run()
    assert not at.exception
    assert at.slider(key="dec_k").value == 100


def test_a_class_with_one_image_gets_a_message(folder_tiny):
    at = _choose_folder(_open(), folder_tiny)  # class 0, 'lonely' (sorts first)
    assert any("K lowered from 10 to 1" in i.value for i in at.info)
    at.selectbox(key="w_s_class").set_value(0).run()
    assert not at.exception
    assert "single training image" in _captions(at)
    assert any("too few for a map" in i.value for i in at.info)
    for page in ("ddoq/ui/app_pages/decoded.py", "ddoq/ui/app_pages/wasserstein.py"):
        at.switch_page(page).run()
        assert not at.exception, page
    at.switch_page("ddoq/ui/app_pages/distill.py").run()
    assert not at.exception
    assert at.number_input(key="w_s_dist_ipc").value == 1
    assert any("lowered from 10 to 1" in i.value for i in at.info), [i.value for i in at.info]


def test_pause_is_disabled_once_paused_and_overlay_is_drawn():
    import json

    at = _open(s_overlay=True)
    at.button(key="btn_run").click().run()
    assert at.button(key="btn_pause").disabled is False
    at.button(key="btn_pause").click().run()
    assert at.button(key="btn_pause").disabled is True
    assert at.button(key="btn_resume").disabled is False
    spec = json.loads(_charts(at)[0].proto.spec)
    rings = [layer["mark"] for layer in spec["layer"] if layer["mark"].get("filled") is False]
    assert len(rings) == 1  # the uniform barycenter: open rings on the centroids
    assert rings[0]["stroke"] not in ("rgba(0,0,0,0)", "transparent", None)
    assert "D4M barycenter" in spec["description"]
    assert any("D4M barycenter" in c.value for c in at.caption)


def test_device_setting_reaches_the_live_run():
    import torch

    # AppTest keeps the sidebar of the first run only (st.navigation): each check opens
    at = _open(s_device="cpu")
    assert any("Computing on **cpu**" in c.value for c in at.sidebar.caption)
    at.button(key="btn_run").click().run()
    assert at.session_state["explore_live"].device == "cpu"
    if not torch.cuda.is_available():
        at = _open(s_device="cuda")
        assert any("CUDA is not available" in w.value for w in at.sidebar.warning)
        assert any("Computing on **cpu**" in c.value for c in at.sidebar.caption)
        at.button(key="btn_run").click().run()
        assert not at.exception and at.session_state["explore_live"].device == "cpu"


def test_own_folder_distils_with_hard_labels_and_says_why_not_soft(folder3, tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setenv("DDOQ_APP_RUNS", str(tmp_path / "runs"))
    at = _choose_folder(_open(s_dist_ipc=2), folder3)
    at.switch_page("ddoq/ui/app_pages/distill.py").run()
    assert not at.exception
    assert any("No teacher for this dataset's classes" in w.value for w in at.warning)
    assert at.button(key="dist_go").disabled
    at.radio(key="w_s_dist_labels").set_value("hard").run()
    _distil(at)
    assert not at.exception and not at.error
    with zipfile.ZipFile(at.session_state["dist_result"]["zip"]) as z:
        classes = {
            n.split("/")[1] for n in z.namelist() if n.startswith("images/") and n.count("/") > 1
        }
    assert classes == {"one", "three", "seven"}


def test_wasserstein_and_distill_report_the_same_w2(tmp_path, monkeypatch):
    monkeypatch.setenv("DDOQ_APP_RUNS", str(tmp_path / "runs"))
    at = _open("ddoq/ui/app_pages/wasserstein.py", s_k=3, s_dist_ipc=3)
    at.button(key="w2_compute").click().run()
    w2 = at.dataframe[0].value.iloc[0]["W2 DDOQ (weighted)"]
    at.button(key="w2_curve_btn").click().run()
    assert "class '0'" in _charts(at)[1].proto.spec
    at.switch_page("ddoq/ui/app_pages/distill.py").run()
    at.radio(key="w_s_dist_labels").set_value("hard").run()
    _distil(at)
    per_class = at.session_state["dist_result"]["metrics"]["w2_per_class"]
    assert per_class[0]["w2_weighted"] == pytest.approx(w2, rel=1e-4)


def test_wasserstein_links_to_the_study_page_which_shows_its_tables_and_plots():
    at = _open("ddoq/ui/app_pages/wasserstein.py")
    links = [node for node in _walk(at) if getattr(node, "type", None) == "page_link"]
    assert len(links) == 1
    assert links[0].proto.page == "findings"
    assert links[0].proto.label == "See the study"
    assert any("weights helped" in c.value for c in at.caption)
    at.switch_page("ddoq/ui/app_pages/findings.py").run()
    assert not at.exception
    text = "\n".join(m.value for m in at.markdown)
    # what BENCHMARKS.md's regimes section says, table rows and all
    section = (Path(APP).parent / "BENCHMARKS.md").read_text().split("<!-- BEGIN regimes -->")[1]
    first_row = next(line for line in section.splitlines() if line.startswith("| balanced |"))
    assert first_row in text
    # it opens on the README's findings, every paragraph of them
    readme = (Path(APP).parent / "README.md").read_text().split("## Findings\n")[1]
    paragraphs = [p for p in readme.split("\n## ")[0].split("\n\n") if p.strip()]
    assert len(paragraphs) >= 2
    shown = [m.value for m in at.markdown]
    assert shown[0] == "**In short** (the README's findings)"
    assert all(p.strip().split("\n")[0] in shown[1] for p in paragraphs)
    images = [node for node in _walk(at) if getattr(node, "type", None) == "image"]
    text_md = (Path(APP).parent / "BENCHMARKS.md").read_text()
    plots = sum(  # every plot of the sections the page shows
        text_md.split(f"<!-- BEGIN {name} -->")[1]
        .split(f"<!-- END {name} -->")[0]
        .count("](docs/benchmarks/")
        for name in ("regimes", "regimes-cross-arch", "converged", "regimes-converged", "elpv")
        if f"<!-- BEGIN {name} -->" in text_md
    )
    assert section.split("<!-- END regimes -->")[0].count("](docs/benchmarks/") >= 1
    assert len(images) == plots


def _walk(at: AppTest) -> list:
    found: list = []

    def walk(node) -> None:
        found.append(node)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def test_distill_page_shares_a_budget_and_charts_it_before_running(tmp_path, monkeypatch):
    """A total of 25 uniformly over 10 classes: the bar chart shows 3, 3, 3, 3, 3, 2, 2, 2,
    2, 2 (`share_out`) before anything runs; the run exports that many per class."""
    from ddoq.distillation.allocation import share_out
    from ddoq.export import load

    monkeypatch.setenv("DDOQ_APP_RUNS", str(tmp_path / "runs"))
    settings = dict(s_dist_count="total budget", s_dist_budget=25, s_dist_allocate="uniform")
    at = _open("ddoq/ui/app_pages/distill.py", **settings)
    assert "dist_result" not in at.session_state
    charts = [c for c in _charts(at) if c.type == "plotly_chart"]
    bars = json.loads(charts[0].proto.spec)["data"][0]
    expected = share_out([400] * 10, 25)[0]
    assert bars["y"] == expected == [3] * 5 + [2] * 5
    at = _distil(at)
    assert not at.exception and not at.error
    ds = load(at.session_state["dist_result"]["folder"])
    assert np.bincount(ds.labels.numpy()).tolist() == expected
    assert ds.manifest["allocation"]["method"] == "uniform"
