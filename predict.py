"""Count objects in images: `python predict.py --model-dir <run>/model IMAGE_OR_FOLDER ... [--json]`.

Prints one line per image: name, count, confidence (tab-separated); --json prints one JSON object
{"predictions": [{name, count, confidence, probabilities}], "errors": [{name, error}]}.
Folders are searched recursively; symlinks are followed only inside the folder, never into a loop;
skipped entries and unreadable images are listed on stderr (and under "errors").

Exit status:
  0  every image was counted
  1  some inputs were skipped or unreadable (the others were counted)
  2  bad arguments, or a path that does not exist
  3  nothing to do: no image file under the given paths (and nothing skipped)
  4  the model failed to load (nothing was counted)
"""

import argparse
import json
import sys

EXIT_OK, EXIT_SOME_UNREADABLE, EXIT_USAGE, EXIT_NOTHING_TO_DO, EXIT_MODEL_FAILED = 0, 1, 2, 3, 4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__[__doc__.index("Exit status"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="model artifact folder (train.py writes <run>/model)")
    source.add_argument("--ckpt", help="a train.py checkpoint (.ckpt)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from src.serving.predict import find_images, predict_paths

    try:
        found = find_images(args.paths)  # cheap checks first: a typo costs no model load
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    for path, why in found.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if not found.files:
        print(f"error: no .jpg/.jpeg/.png image to count under {' '.join(args.paths)}", file=sys.stderr)
        return EXIT_SOME_UNREADABLE if found.skipped else EXIT_NOTHING_TO_DO

    from src.inference.loading import load_predictor

    try:
        predictor, _ = load_predictor(model_dir=args.model_dir, ckpt_path=args.ckpt, backend=args.backend)
    except Exception as err:  # any failure here means no answer at all: say so in one line
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: the model failed to load: {detail}", file=sys.stderr)
        return EXIT_MODEL_FAILED
    out = predict_paths(predictor, found, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"predictions": out.predictions, "errors": out.errors}, indent=2))
    else:
        for p in out.predictions:
            print(f"{p['name']}\t{p['count']}\t{p['confidence']:.3f}")
    for e in out.errors[len(found.skipped):]:  # skipped entries were listed above
        print(f"skipped {e['name']}: {e['error']}", file=sys.stderr)
    return EXIT_SOME_UNREADABLE if out.errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
