"""What a server trusts in a model folder: every file a backend loads is pinned by hash, and
model_config.json's sizes are checked before anything is built from them (issue 27, items 4 and 12).
Entry scripts turn such refusals into one line and exit status 1 (src/utils/entry.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from src.inference.artifact import (
    CONFIG_FILE,
    INT8_FILE,
    ONNX_FILE,
    ArtifactError,
    export_artifact,
    file_sha256,
    read_config,
    record_int8,
)
from src.inference.predictor import CountPredictor
from tests.helpers import IMAGE_SIZE, ROOT, tiny_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    return [export_artifact(tiny_net(seed), IMAGE_SIZE, "argmax", root / f"m{seed}", onnx=True, tarball=False)
            for seed in (1, 2)]


def test_export_pins_the_onnx_file(two_models):
    config = read_config(two_models[0])
    assert config["files_sha256"][ONNX_FILE] == file_sha256(two_models[0] / ONNX_FILE)


def test_a_swapped_onnx_model_is_refused(two_models, tmp_path):
    mine = shutil.copytree(two_models[0], tmp_path / "model")
    CountPredictor.from_model_dir(mine, backend="onnx")  # as exported: serves
    shutil.copy(two_models[1] / ONNX_FILE, mine / ONNX_FILE)  # same shape, other weights
    with pytest.raises(ArtifactError, match=r"model\.onnx does not match its sha256 .* replaced or is corrupt"):
        CountPredictor.from_model_dir(mine, backend="onnx")


def test_a_swapped_int8_model_is_refused(two_models, tmp_path):
    mine = shutil.copytree(two_models[0], tmp_path / "model")
    shutil.copy(mine / ONNX_FILE, mine / INT8_FILE)  # stands in for a quantized copy
    record_int8(mine, {"calibration_method": "minmax"})
    assert read_config(mine)["files_sha256"][INT8_FILE] == file_sha256(mine / INT8_FILE)
    CountPredictor.from_model_dir(mine, backend="onnx-int8")
    shutil.copy(two_models[1] / ONNX_FILE, mine / INT8_FILE)
    with pytest.raises(ArtifactError, match=r"model_int8\.onnx does not match its sha256"):
        CountPredictor.from_model_dir(mine, backend="onnx-int8")


def test_reexporting_without_onnx_drops_a_stale_onnx(two_models, tmp_path):
    mine = shutil.copytree(two_models[0], tmp_path / "model")
    export_artifact(tiny_net(3), IMAGE_SIZE, "argmax", mine, tarball=False)  # new weights, no --onnx
    assert not (mine / ONNX_FILE).exists()  # the old graph would answer for other weights


def write_config(model_dir, config) -> None:
    (model_dir / CONFIG_FILE).write_text(json.dumps(config))


@pytest.mark.parametrize("classes", [5_000_000, 1_000_000])
def test_a_huge_config_is_refused_at_once_in_one_short_line(two_models, tmp_path, classes):
    mine = shutil.copytree(two_models[0], tmp_path / "model")
    config = read_config(mine)
    config["classes"] = list(range(classes))
    config["net"]["num_classes"] = classes
    write_config(mine, config)
    start = time.perf_counter()
    with pytest.raises(ArtifactError) as err:
        read_config(mine)
    assert time.perf_counter() - start < 2.0
    assert len(str(err.value)) < 400 and "bytes, over the" in str(err.value)


def test_a_config_asking_for_too_many_classes_is_refused_before_building(two_models, tmp_path):
    mine = shutil.copytree(two_models[0], tmp_path / "model")
    config = read_config(mine)
    config["classes"] = list(range(90_000))  # fits the byte limit; far past any count
    config["net"]["num_classes"] = 90_000
    write_config(mine, config)
    start = time.perf_counter()
    with pytest.raises(ArtifactError, match=r"net\.num_classes=90000 must be an integer in 2\.\.1002") as err:
        CountPredictor.from_model_dir(mine)
    assert time.perf_counter() - start < 2.0 and len(str(err.value)) < 400
    config["net"]["num_classes"] = 6  # and a long list that disagrees with the net is named by its length
    write_config(mine, config)
    with pytest.raises(ArtifactError, match=r"classes \(a list of 90,000\) must list the network's 6 classes") as err:
        read_config(mine)
    assert len(str(err.value)) < 400


def test_entry_scripts_turn_bad_settings_into_one_line_and_exit_1():
    out = subprocess.run([sys.executable, "train.py", "experiment=quickstart", "data.num_classes=7"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "train: data.num_classes=7 contradicts data.max_count=5" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_bug_keeps_its_traceback(capsys):
    from src.utils.entry import task_wrapper

    @task_wrapper("demo")
    def buggy():
        raise KeyError("a bug, not a user's mistake")

    with pytest.raises(KeyError):
        buggy()

    @task_wrapper("demo", return_code=True)
    def missing():
        raise FileNotFoundError("no such folder data/x: pass data.data_dir=...")

    assert missing() == 1
    assert capsys.readouterr().err == "demo: no such folder data/x: pass data.data_dir=...\n"
