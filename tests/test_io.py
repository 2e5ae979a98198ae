"""ddoq._io: atomic files and folders, records and states (no pickle)."""

import pickle

import numpy as np
import pytest
import torch

from ddoq._io import (
    array_digest,
    atomic_write,
    load_record,
    load_state,
    replace_dir,
    save_record,
    save_state,
    staged_dir,
    write_json,
)


class Boom(Exception):
    pass


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    write_json(path, {"a": 1})

    def fail(f):
        f.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(path, fail)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_staged_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(Boom), staged_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
        raise Boom
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # the failed build changed nothing
    with staged_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folder left
    assert out.stat().st_mode & 0o777 == 0o755


def test_replace_dir_replaces_a_file_too(tmp_path):
    (tmp_path / "out").write_text("a file")
    (tmp_path / "new").mkdir()
    replace_dir(tmp_path / "new", tmp_path / "out")
    assert (tmp_path / "out").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_record_round_trip(tmp_path):
    tensors = {"a": torch.arange(3.0), "skip": None}
    save_record(tmp_path / "r.safetensors", tensors, {"n": np.int64(3), "w": [0.5, None]})
    t, meta = load_record(tmp_path / "r.safetensors")
    assert list(t) == ["a"] and torch.equal(t["a"], tensors["a"])
    assert meta == {"n": 3, "w": [0.5, None]} and type(meta["n"]) is int


def test_state_round_trip_keeps_int_keys_tuples_and_tensors(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), betas=(0.8, 0.9))
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "generator": torch.Generator().manual_seed(3).get_state(),
        "losses": [1.5, float("nan")],
    }
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys stay integers
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    for k, v in state["optimizer"]["state"][0].items():
        assert torch.equal(back["optimizer"]["state"][0][k], v), k
    assert torch.equal(back["generator"], state["generator"])
    assert back["losses"][0] == 1.5 and np.isnan(back["losses"][1])
    opt.load_state_dict(back["optimizer"])  # torch accepts it as it is
    with pytest.raises(TypeError, match="cannot store a object"):
        save_state(tmp_path / "bad.safetensors", {"x": object()})


def test_load_state_refuses_a_pickle(tmp_path):
    path = tmp_path / "s.safetensors"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a ddoq state file"):
        load_state(path)


def test_array_digest_is_a_content_key():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert array_digest(a) == array_digest(a.copy()) == array_digest(a.T.copy().T)
    assert array_digest(a) != array_digest(a.astype(np.float64))
    assert array_digest(a) != array_digest(a.reshape(3, 2))
