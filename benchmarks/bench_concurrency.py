"""Why micro-batching does not pay on this CPU: 16 threads call ``predictor.predict([one image])`` at
once, without HTTP, on one ResNet50 ONNX Runtime session (2 intra-op threads): plain (each call its own
forward, ORT runs them in parallel) vs ``with_micro_batching`` (max_batch 16, max_wait 5 ms), with ORT's
default thread spinning and with spinning off. Prints images/s (wall) and images per CPU-second
(this process) of each, two rounds, and the batch sizes the batcher ran; then the forward alone, one
stream, at batch 1 / 8 / 16 (best of 3 interleaved rounds). Numbers in docs/serving_performance.md.

    python benchmarks/bench_concurrency.py
"""

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from src.inference.artifact import export_artifact  # noqa: E402
from src.inference.predictor import CountPredictor  # noqa: E402
from src.models.backbones import CountNet  # noqa: E402
from src.serving.batching import with_micro_batching  # noqa: E402


def run(pred, image, n=48):
    t, c = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda _: pred.predict([image]), range(n)))
    return round(n / (time.perf_counter() - t), 2), round(n / (time.process_time() - c), 2)


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    folder = export_artifact(CountNet("resnet50", None, 6), 224, "argmax", tmp / "m", onnx=True, tarball=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (425, 500, 3), dtype=np.uint8))
    plain = CountPredictor.from_model_dir(folder, backend="onnx")
    nospin = CountPredictor.from_model_dir(folder, backend="onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    nospin.runner.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    for name, base in (("spinning", plain), ("no spinning", nospin)):
        batched = with_micro_batching(base, 16, 5)
        run(base, image, 16), run(batched, image, 16)  # warm-up
        for _ in range(2):
            print(f"{name:12} plain   (img/s, img/CPU-s): {run(base, image)}")
            print(f"{name:12} batched (img/s, img/CPU-s): {run(batched, image)} batches {dict(batched.batcher.batch_sizes)}")
        batched.batcher.close()
    forward_alone(plain.runner)


def forward_alone(runner) -> None:
    xs = {b: np.random.default_rng(b).standard_normal((b, 3, 224, 224), dtype=np.float32) for b in (1, 8, 16)}
    for x in xs.values():
        runner.run(x)
    best = {b: (float("inf"), float("inf")) for b in xs}
    for _ in range(3):
        for b, x in xs.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(16 // b):
                runner.run(x)
            wall, cpu = (time.perf_counter() - t) / 16, (time.process_time() - c) / 16
            best[b] = (min(best[b][0], wall), min(best[b][1], cpu))
    for b, (wall, cpu) in best.items():
        print(f"forward alone, batch {b:2}: {1 / wall:.2f} img/s, {1 / cpu:.2f} img/CPU-s")


if __name__ == "__main__":
    main()
