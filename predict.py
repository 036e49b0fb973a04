"""Count objects in images: `python predict.py --model-dir <run>/model IMAGE_OR_FOLDER ... [--json]`.

Prints one line per image: name, label (count, or ">5" for a model with the "more than 5" class),
confidence (tab-separated); --json prints one JSON object
{"predictions": [{name, count, label, confidence, probabilities, ...}], "errors": [{name, error}]}.
Exit status 1 when any image could not be read.

Check bins against their expected quantities: `python predict.py --model-dir <dir> --manifest bins.csv
[--out verdicts.csv] [--json]`, where bins.csv has the columns image,expected_quantity (image paths
relative to the CSV). One verdict per row (match | mismatch | review); a row whose image cannot be
read or whose quantity is bad gets its error in its own row, and the rest still run (exit status 1).
docs/warehouse.md has the details.
"""

import argparse
import json
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="image files or folders (searched recursively)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="model artifact folder (train.py writes <run>/model)")
    source.add_argument("--ckpt", help="a train.py checkpoint (.ckpt)")
    parser.add_argument("--manifest", help="CSV with columns image,expected_quantity: one verdict per row")
    parser.add_argument("--out", help="with --manifest: write the verdicts to this CSV")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args(argv)
    if bool(args.paths) == bool(args.manifest):
        parser.error("give image paths or --manifest, not both (and not neither)")
    if args.out and not args.manifest:
        parser.error("--out goes with --manifest")
    return args


def run_manifest(predictor, args) -> int:
    from src.serving.predict import predict_manifest, write_verdicts

    try:
        rows = predict_manifest(predictor, args.manifest, batch_size=args.batch_size)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out:
        write_verdicts(rows, args.out)
    if args.json:
        print(json.dumps({"predictions": rows}, indent=2))
    elif not args.out:
        for r in rows:
            if "error" in r:
                print(f"{r['image']}\t{r['expected_quantity']}\terror: {r['error']}")
            else:
                print(f"{r['image']}\t{r['expected_quantity']}\t{r['verdict']}\t{r['label']}\t{r['p_expected']:.3f}")
    errors = [r for r in rows if "error" in r]
    for r in errors:
        print(f"row {r['row']} ({r['image']}): {r['error']}", file=sys.stderr)
    return 1 if errors else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from src.inference.loading import load_predictor
    from src.serving.predict import predict_paths

    predictor, _ = load_predictor(model_dir=args.model_dir, ckpt_path=args.ckpt, backend=args.backend)
    if args.manifest:
        return run_manifest(predictor, args)
    try:
        out = predict_paths(predictor, args.paths, batch_size=args.batch_size)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"predictions": out.predictions, "errors": out.errors}, indent=2))
    else:
        for p in out.predictions:
            print(f"{p['name']}\t{p['label']}\t{p['confidence']:.3f}")
    for e in out.errors:
        print(f"skipped {e['name']}: {e['error']}", file=sys.stderr)
    return 1 if out.errors else 0


if __name__ == "__main__":
    sys.exit(main())
