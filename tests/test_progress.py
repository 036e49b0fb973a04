"""predict.py over many files: batch by batch (a progress bar on a terminal), the same answers and
errors in the same order as one call; its stderr header names the model and its provenance."""

from __future__ import annotations

import json
import re

import predict
from tests.helpers import image_bytes


def test_predict_in_batches_answers_like_one_call_and_names_the_model(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "bins"
    folder.mkdir()
    for i in range(7):
        (folder / f"{i:02d}.jpg").write_bytes(image_bytes(i))
    (folder / "03b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")  # an error in the middle
    assert predict.main(["--model-dir", str(tiny_model_dir), str(folder), "--json", "--batch-size", "32"]) == 1
    one_call = capsys.readouterr()
    assert predict.main(["--model-dir", str(tiny_model_dir), str(folder), "--json", "--batch-size", "2"]) == 1
    batched = capsys.readouterr()
    a, b = json.loads(batched.out), json.loads(one_call.out)
    assert a["errors"] == b["errors"] and len(a["errors"]) == 1
    assert [(p["name"], p["count"]) for p in a["predictions"]] == [(p["name"], p["count"]) for p in b["predictions"]]
    # Batches of 2 and of 8 run different kernels: the same answers, to float precision.
    assert all(abs(p["confidence"] - q["confidence"]) < 1e-4 for p, q in zip(a["predictions"], b["predictions"], strict=True))
    assert [p["name"] for p in json.loads(batched.out)["predictions"]] == [str(folder / f"{i:02d}.jpg") for i in range(7)]
    header = batched.err.splitlines()[0]
    # (the backbone's name may carry its library: "torchvision/resnet18")
    assert re.match(rf"# model (torchvision/)?resnet18, 64 px, argmax rule, counts 0\.\.5 \({re.escape(str(tiny_model_dir))}\); "
                    "trained on ", header), header
