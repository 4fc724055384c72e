import pickle

import pytest
import torch

from repro.errors import ReproError
from repro.weights import load_state_dict


class _WritesAFile:
    """Unpickling this calls open(path, 'w'): what a hostile checkpoint would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "model.pth"
    hostile.write_bytes(pickle.dumps({"weight": _WritesAFile(marker)}))
    with pytest.raises(ReproError, match="refused to load"):
        load_state_dict(hostile)
    assert not marker.exists()


def test_plain_tensor_checkpoints_load(tmp_path):
    from safetensors.torch import save_file

    state = {"w": torch.arange(4.0)}
    torch.save(state, tmp_path / "a.pth")
    save_file(state, str(tmp_path / "a.safetensors"))
    assert torch.equal(load_state_dict(tmp_path / "a.pth")["w"], state["w"])
    assert torch.equal(load_state_dict(tmp_path / "a.safetensors")["w"], state["w"])


def test_unknown_formats_and_non_dicts_are_refused(tmp_path):
    (tmp_path / "a.ckpt").write_bytes(b"x")
    with pytest.raises(ReproError, match="unknown weight format"):
        load_state_dict(tmp_path / "a.ckpt")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ReproError, match="expected a state dict"):
        load_state_dict(tmp_path / "list.pth")


def test_a_missing_or_malformed_lock_is_one_line_naming_the_file(tmp_path):
    from repro.weights import read_lock

    with pytest.raises(ReproError, match="weights lock not found"):
        read_lock(tmp_path / "nowhere.json")
    lock = tmp_path / "lock.json"
    lock.write_text('{"version": 1, "weights": {"timm/x.y": {"url": "https://h/x", "file": "x", "sha256": "abc"}}}')
    with pytest.raises(ReproError, match=r"lock.json: timm/x.y: sha256 'abc' is not 64 lowercase hex digits"):
        read_lock(lock)
    lock.write_text('{"version": 1, "weights": {"timm/x.y": {"url": "https://h/x"}}}')
    with pytest.raises(ReproError, match="timm/x.y: .*missing 1 required positional argument: 'file'"):
        read_lock(lock)
    lock.write_text("[]")
    with pytest.raises(ReproError, match='expected {"version": 1'):
        read_lock(lock)
