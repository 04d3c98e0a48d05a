"""Sidecars, staleness and atomic writes: what keeps stages from silently reusing wrong files."""
import argparse
import json
import os

import numpy as np
import pytest
from conftest import run_script

from utils.errors import StageError
from utils.provenance import SIDECAR_SUFFIX, StageRun


def stage(tmp_path, script, backbone="bb", **args):
    return StageRun(script, argparse.Namespace(seed=0, **args), tmp_path, dataset="ds", backbone=backbone)


def test_sidecar_records_script_arguments_seed_inputs_and_versions(tmp_path):
    first = stage(tmp_path, "a.py")
    first.save_array(str(tmp_path / "a.npy"), np.ones((2, 2)))
    second = stage(tmp_path, "b.py", k=3)
    second.load_array(str(tmp_path / "a.npy"), "a.py")
    second.save_array(str(tmp_path / "b.npy"), np.zeros(2))
    meta = json.loads((tmp_path / ("b.npy" + SIDECAR_SUFFIX)).read_text())
    assert meta["script"] == "b.py" and meta["args"]["k"] == 3 and meta["seed"] == 0
    assert meta["inputs"] == {"a.npy": json.loads((tmp_path / ("a.npy" + SIDECAR_SUFFIX)).read_text())["run_id"]}
    assert "numpy" in meta["versions"] and meta["shape"] == [2]


def test_output_made_from_a_since_rewritten_input_is_stale(tmp_path):
    stage(tmp_path, "a.py").save_array(str(tmp_path / "a.npy"), np.ones(2))
    middle = stage(tmp_path, "b.py")
    middle.load_array(str(tmp_path / "a.npy"), "a.py")
    middle.save_array(str(tmp_path / "b.npy"), np.ones(2))
    stage(tmp_path, "a.py").save_array(str(tmp_path / "a.npy"), 2 * np.ones(2))  # a re-run upstream
    with pytest.raises(StageError, match=r"b.npy is stale: .*a.npy changed after it was made; re-run b.py"):
        stage(tmp_path, "c.py").load_array(str(tmp_path / "b.npy"), "b.py")


def test_hand_placed_input_replaced_later_also_marks_outputs_stale(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(2))
    middle = stage(tmp_path, "b.py")
    middle.load_array(str(tmp_path / "a.npy"), "a.py")
    middle.save_array(str(tmp_path / "b.npy"), np.ones(2))
    np.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(StageError, match="stale"):
        stage(tmp_path, "c.py").load_array(str(tmp_path / "b.npy"), "b.py")


def test_file_made_for_another_backbone_names_the_rerun(tmp_path):
    stage(tmp_path, "a.py", backbone="RN50").save_array(str(tmp_path / "a.npy"), np.ones(2))
    with pytest.raises(StageError, match=r"made for backbone 'RN50', not 'ViT-B-32': re-run a.py with --backbone ViT-B-32"):
        stage(tmp_path, "b.py", backbone="ViT-B-32").load_array(str(tmp_path / "a.npy"), "a.py")


def test_interrupted_write_leaves_neither_file_nor_temp(tmp_path):
    class Interrupt(BaseException):
        pass

    run = stage(tmp_path, "a.py")
    with pytest.raises(Interrupt):
        run._write(str(tmp_path / "a.npy"), lambda f: (f.write(b"half"), (_ for _ in ()).throw(Interrupt())))
    assert os.listdir(tmp_path) == []


def test_refuses_to_write_outside_the_data_dir(tmp_path):
    with pytest.raises(StageError, match="outside --data-dir"):
        stage(tmp_path / "data", "a.py").save_array(str(tmp_path / "elsewhere.npy"), np.ones(2))


def test_missing_input_is_one_line_naming_the_script_to_run(tmp_path):
    result = run_script("retrieve_text.py", "--data-dir", tmp_path, "--dataset", "cifar10", "--backbone", "x", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path}/nouns/x/noun_embedding.npy is missing: run text_embedding.py first"]
