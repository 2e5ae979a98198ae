"""Serving the app to a group (issue 20): shared links, allowed folders, session store
expiry, folder links and the job queue; AppTest and the library, no browser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGES = ["explore", "decoded", "wasserstein", "train", "distill", "teach", "findings"]


@pytest.fixture(autouse=True)
def app_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DDOQ_APP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DDOQ_APP_UMAP", "0")


# -- a shared link on a freshly started server ------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_a_page_opened_by_its_url_first_renders(page, monkeypatch):
    """The page's URL is the first request: the page runs under app.py, settings and all.

    Streamlit decides once per process whether the app uses the old ``pages/`` folder
    mode (`PagesManager.uses_pages_directory`, None until the first session starts);
    resetting it makes this AppTest the first session of a fresh server.
    """
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(
        f"ddoq/ui/app_pages/{page}.py"
    )  # before any run: identified by its URL, as a link
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["session_id"]  # app.py ran first: the session's settings exist
    assert any("Computing on" in c.value for c in at.sidebar.caption)  # and its sidebar


def test_no_pages_folder_beside_the_app():
    """A ``pages/`` folder beside app.py switches Streamlit to its old multipage mode, in
    which a page's URL runs the page file alone, without app.py (see app.py)."""
    assert not (ROOT / "pages").exists()


# -- folder links ---------------------------------------------------------------------


def _png(path: Path, value: int) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def _real_files(class_dir: Path) -> set[str]:
    """The regular files under `class_dir`, walked without following any link."""
    found = set()
    for dirpath, _, filenames in os.walk(class_dir, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                found.add(str(path.resolve()))
    return found


def test_folder_links_to_the_parent_and_another_class_are_skipped(tmp_path):
    import warnings

    from ddoq.app.state import data_info
    from ddoq.data import load_dataset

    root = tmp_path / "data"
    for i in range(3):
        _png(root / "a" / f"{i}.png", 10 * i)
    for i in range(5):
        _png(root / "b" / "sub" / f"{i}.png", 100 + i)
    (root / "a" / "up").symlink_to(root)  # the parent: a loop through every class
    (root / "a" / "other").symlink_to(root / "b")  # another class
    (root / "a" / "inner").symlink_to(root / "a")  # itself: a loop inside the class
    (root / "b" / "again.png").symlink_to(root / "b" / "sub" / "0.png")  # a second path
    (root / "b" / "stolen.png").symlink_to(root / "a" / "0.png")  # a file of class a
    (root / "b" / "inside").symlink_to(root / "b" / "sub")  # same folder, second path

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(str(root), split="all", image_size=8, channels=1)
    assert ds.classes == ["a", "b"]
    counts = [len(_real_files(root / c)) for c in ds.classes]
    assert counts == [3, 5]
    assert ds.class_counts().tolist() == counts
    listed = [os.path.realpath(p) for p in ds.paths]
    assert len(listed) == len(set(listed))  # no image twice, under one class or two
    for path, label in ds.samples:
        assert os.path.realpath(path) in _real_files(root / ds.classes[label])
    skipped = {s.path: s.reason for s in ds.skipped}
    assert set(skipped) == {
        "a/up",
        "a/other",
        "a/inner",
        "b/again.png",
        "b/stolen.png",
        "b/inside",
    }
    assert "leaves its class folder" in skipped["a/up"]
    assert "loops" in skipped["a/inner"]
    assert "same file as b/sub/0.png" in skipped["b/again.png"]
    assert any("links out of their class folder" in str(w.message) for w in caught)
    info = data_info(ds)  # what the app shows: the same counts and the skipped links
    assert info.counts == (3, 5) and len(info.skipped) == 6


# -- what a session may read ------------------------------------------------------------


def _image_folder(root: Path, classes=("x", "y"), n: int = 4) -> Path:
    for c, name in enumerate(classes):
        for i in range(n):
            _png(root / name / f"{i}.png", 60 * c + i)
    return root


def test_data_roots_refuse_etc_and_the_store_and_allow_inside(tmp_path, monkeypatch):
    from ddoq.app.store import check_typed_folder, data_roots, store_root

    data = _image_folder(tmp_path / "data" / "set")
    monkeypatch.setenv("DDOQ_APP_DATA_ROOTS", f"{tmp_path / 'data'}{os.pathsep}/nonexistent")
    assert data_roots() == [(tmp_path / "data").resolve(), Path("/nonexistent")]
    assert check_typed_folder(str(data)) == data.resolve()
    with pytest.raises(ValueError, match="outside the folders this server allows"):
        check_typed_folder("/etc")
    (tmp_path / "data" / "sneaky").symlink_to("/etc")  # inside by name, outside for real
    with pytest.raises(ValueError, match="outside the folders"):
        check_typed_folder(str(tmp_path / "data" / "sneaky"))
    store = store_root()
    (store / "abc123").mkdir(parents=True)
    (tmp_path / "data" / "store-link").symlink_to(store / "abc123")
    for typed in (store, store / "abc123", tmp_path / "data" / "store-link"):
        with pytest.raises(ValueError, match="session store") as err:
            check_typed_folder(str(typed))
        assert "\n" not in str(err.value)


def _typed(folder: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["s_source"] = "folder…"
    at.session_state["s_folder"] = str(folder)
    return at.run()


def test_a_second_session_typing_the_session_store_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("DDOQ_APP_DATA_ROOTS", raising=False)
    # session A's upload, extracted in its folder of the store
    theirs = _image_folder(tmp_path / "runs" / "sessionA0001" / "uploads" / "set")
    for typed in (theirs, tmp_path / "runs", tmp_path / "runs" / "sessionA0001"):
        at = _typed(typed)
        assert not at.exception, [e.value for e in at.exception]
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "inside the app's session store" in errors[0], errors
        assert "w_s_class" not in [box.key for box in at.selectbox]  # nothing was listed
    # the same images outside the store: read as today (no roots set)
    mine = _image_folder(tmp_path / "mine")
    at = _typed(mine)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [o.split(" (")[0] for o in at.selectbox(key="w_s_class").options] == ["0: x", "1: y"]


def test_with_data_roots_etc_is_refused_in_the_app(tmp_path, monkeypatch):
    monkeypatch.setenv("DDOQ_APP_DATA_ROOTS", str(tmp_path / "data"))
    at = _typed(Path("/etc"))
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "outside the folders this server allows" in errors[0], errors
    at = _typed(_image_folder(tmp_path / "data" / "set"))
    assert not at.error, [e.value for e in at.error]


# -- session folders expire ---------------------------------------------------------------


def _session(store: Path, name: str, age: float, size: int = 10) -> Path:
    import time

    from ddoq.app.store import MARKER

    folder = store / name
    (folder / "exports").mkdir(parents=True)
    (folder / "exports" / "set.bin").write_bytes(b"\0" * size)
    when = time.time() - age
    (folder / MARKER).touch()
    os.utime(folder / MARKER, (when, when))
    return folder


def test_expired_session_folders_are_removed_at_start_and_active_ones_kept(tmp_path):
    from ddoq.app.store import StoreSettings, start_sweeping

    store, day = tmp_path / "runs", 86400.0
    old = _session(store, "old", 8 * day)
    recent = _session(store, "recent", 2 * day)
    working = _session(store, "working", 30 * day)  # idle marker, but a job is queued
    start_sweeping(store, StoreSettings.from_env(), busy=lambda: {"working"}, every=3600)
    assert not old.exists()  # removed before start_sweeping returned: at app start
    assert recent.is_dir() and working.is_dir()


def test_ttl_settings_and_a_session_in_use_is_kept(tmp_path, monkeypatch):
    from ddoq.app.store import StoreSettings, sweep, touch

    monkeypatch.setenv("DDOQ_APP_SESSION_TTL", "90m")
    monkeypatch.setenv("DDOQ_APP_STORE_MAX_BYTES", "2k")
    assert StoreSettings.from_env() == StoreSettings(ttl=5400.0, max_bytes=2048)
    monkeypatch.setenv("DDOQ_APP_SESSION_TTL", "soon")
    with pytest.raises(ValueError, match="'soon' is not understood"):
        StoreSettings.from_env()
    store = tmp_path / "runs"
    idle = _session(store, "idle", 2 * 3600)
    used = _session(store, "used", 2 * 3600)
    touch(used)  # a run of that session, just now
    report = sweep(store, StoreSettings(ttl=3600.0))
    assert report.expired == (idle,) and used.is_dir()


def test_the_cap_removes_the_least_recently_used_first(tmp_path):
    from ddoq.app.store import StoreSettings, folder_bytes, sweep

    store = tmp_path / "runs"
    folders = [_session(store, f"s{i}", age=(5 - i) * 7200, size=1000) for i in range(5)]
    sizes = [folder_bytes(f) for f in folders]
    cap = sum(sizes[2:]) + 10  # room for the three most recent
    report = sweep(store, StoreSettings(ttl=30 * 86400.0, max_bytes=cap), busy={"s0"})
    # s0 is the oldest but busy: s1, then s2 go; s0, s3, s4 stay
    assert report.over_cap == (folders[1], folders[2])
    assert [f.exists() for f in folders] == [True, False, False, True, True]
    assert report.store_bytes == sizes[0] + sizes[3] + sizes[4] <= cap


# -- one job queue ----------------------------------------------------------------------


def _kmeans_job(log: list, gate=None):
    """A job that fits k-means a few times (a small real computation), ticking each time,
    and records when it started and ended."""
    import time

    import numpy as np
    from sklearn.cluster import KMeans

    def fn(job):
        log.append(("start", job.title, time.monotonic()))
        if gate is not None:
            gate.wait(60)
        x = np.random.default_rng(0).normal(size=(400, 4))
        for i in range(4):
            KMeans(n_clusters=5, n_init=1, random_state=i).fit(x)
            job.tick((i + 1) / 4, f"fit {i + 1}/4")
        log.append(("end", job.title, time.monotonic()))

    return fn


def test_two_sessions_two_jobs_each_run_one_at_a_time_in_submission_order(monkeypatch):
    import threading

    from ddoq.app.jobs import FunctionJob, JobQueue

    monkeypatch.setenv("DDOQ_APP_MAX_JOBS", "1")
    queue = JobQueue()
    assert queue.max_running == 1
    log: list = []
    gate = threading.Event()
    order = [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")]
    jobs = {}
    for session, title in order:
        fn = _kmeans_job(log, gate if title == "a1" else None)
        jobs[title] = FunctionJob(fn, title).start(queue, session=session)
    # a1 runs (held at its gate); the others wait, each knowing its place
    assert [jobs[t].place() for _, t in order] == [None, 1, 2, 3]
    assert jobs["b1"].state == "queued" and jobs["b1"].running
    assert queue.jobs("a") == [jobs["a1"], jobs["a2"]]  # a session sees only its own
    assert queue.jobs("b") == [jobs["b1"], jobs["b2"]]
    assert queue.busy_sessions() == {"a", "b"}
    gate.set()
    for job in jobs.values():
        assert job.join(120), job.status
        assert job.state == "done", job.error
    starts = [title for kind, title, _ in log if kind == "start"]
    assert starts == [t for _, t in order]
    events = [(kind, title) for kind, title, _ in log]
    assert events == [(k, t) for _, t in order for k in ("start", "end")]  # never overlapping
    assert queue.busy_sessions() == set() and queue.jobs("a") == []


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no thread priorities here")
def test_a_job_runs_at_a_lower_priority_than_the_server_and_leaves_it_alone():
    import sys
    import threading

    from ddoq.app.jobs import JOB_NICENESS, FunctionJob, JobQueue

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    server = nice()
    job = FunctionJob(lambda _job: nice()).start(JobQueue(1))
    assert job.join(60) and job.state == "done", job.error
    if sys.platform.startswith("linux"):  # a thread's own niceness
        assert job.result == min(19, server + JOB_NICENESS)
    assert nice() == server  # the calling thread (the server's) keeps its priority


def test_cancel_a_waiting_job_and_a_running_training(tmp_path):
    import time

    from ddoq.app.jobs import Cancelled, FunctionJob, JobQueue, TrainJob, TrainSpec
    from ddoq.train.loop import TrainConfig

    queue = JobQueue(max_running=1)
    spec = TrainSpec(
        methods=("random", "d4m"),
        ipc=2,
        teacher="auto",
        train=TrainConfig(epochs=300, width=16, labels="hard"),
    )
    run_root = tmp_path / "runs" / "job"
    train = TrainJob(spec, run_root).start(queue, session="a")
    log: list = []
    waiting = FunctionJob(_kmeans_job(log), "waits").start(queue, session="a")
    after = FunctionJob(_kmeans_job(log), "after").start(queue, session="b")
    assert waiting.place() == 1
    waiting.cancel()  # leaves the queue, never runs
    assert waiting.join(5) and waiting.state == "cancelled" and after.place() == 1
    deadline = time.time() + 240
    while not train.records["random"].epochs and time.time() < deadline:
        time.sleep(0.2)
    assert train.records["random"].epochs, train.status
    assert (run_root / "random").is_dir()  # it is writing its run folder
    asked = time.monotonic()
    train.cancel()
    assert train.join(60)
    stopped_after = time.monotonic() - asked
    assert train.state == "cancelled" and train.status == "cancelled", train.error
    assert len(train.records["random"].epochs) < 300
    assert not run_root.exists()  # its partial folder is gone
    assert after.join(120) and after.state == "done"  # the queue moved on
    assert [t for kind, t, _ in log if kind == "start"] == ["after"]
    assert issubclass(Cancelled, Exception)
    print(f"cancel to stop: {stopped_after:.2f} s")


def test_a_cancelled_distillation_leaves_no_export(tmp_path):
    import time

    from ddoq.app.jobs import DistillJob, JobQueue
    from ddoq.distillation.config import DistillConfig

    queue = JobQueue(max_running=1)
    out = tmp_path / "exports" / "set"
    job = DistillJob(DistillConfig(ipc=2, teacher=None), out).start(queue, session="a")
    deadline = time.time() + 240
    while "class" not in job.status and job.running and time.time() < deadline:
        time.sleep(0.05)
    assert job.running, (job.state, job.error)
    job.cancel()
    assert job.join(60) and job.state == "cancelled", job.error
    assert not out.exists() and not job.archive.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no staged leftovers


# -- many sessions' threads parse scripts at once ---------------------------------------


def test_the_app_lets_one_thread_at_a_time_parse(monkeypatch):
    """The app serialises `ast.parse` (CPython's gh-106905: parsing in two threads at once
    can raise "AST constructor recursion depth mismatch", as a served app's sessions and
    jobs do); then many threads parsing deep code at once all get the right tree."""
    import ast
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(ast, "parse", ast.parse)  # restored after the test
    AppTest.from_file(APP, default_timeout=120).run()
    assert getattr(ast.parse, "_ddoq_serialised", False)
    source = (
        "x = " + "(" * 60 + "1" + ")" * 60 + "\n" + "def f(a):\n    return [a for a in a]\n" * 50
    )
    expected = ast.dump(ast.parse(source))
    with ThreadPoolExecutor(8) as pool:
        trees = list(pool.map(lambda _: ast.dump(ast.parse(source)), range(200)))
    assert trees == [expected] * 200
