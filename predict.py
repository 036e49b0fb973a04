"""Count objects in images: `python predict.py --model-dir <run>/model IMAGE_OR_FOLDER ... [--json]`.

Prints one line per image: name, count, confidence (tab-separated); --json prints one JSON object
{"predictions": [{name, count, confidence, probabilities}], "errors": [{name, error}]}.
Exit status 1 when any image could not be read.
"""

import argparse
import json
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="model artifact folder (train.py writes <run>/model)")
    source.add_argument("--ckpt", help="a train.py checkpoint (.ckpt)")
    parser.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch",
                        help="onnx-int8 needs --model-dir with model_int8.onnx (export.py --int8)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from src.inference.loading import load_predictor
    from src.serving.predict import predict_paths

    predictor, _ = load_predictor(model_dir=args.model_dir, ckpt_path=args.ckpt, backend=args.backend)
    try:
        out = predict_paths(predictor, args.paths, batch_size=args.batch_size)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"predictions": out.predictions, "errors": out.errors}, indent=2))
    else:
        for p in out.predictions:
            print(f"{p['name']}\t{p['count']}\t{p['confidence']:.3f}")
    for e in out.errors:
        print(f"skipped {e['name']}: {e['error']}", file=sys.stderr)
    return 1 if out.errors else 0


if __name__ == "__main__":
    sys.exit(main())
