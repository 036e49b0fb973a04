"""Count objects in images: `python predict.py --model-dir <run>/model IMAGE_OR_FOLDER ... [--json]`.

Prints one line per image: name, label (the count, or ">5" for a model with the "more than 5"
class), confidence (tab-separated); --json prints one JSON object
{"predictions": [{name, count, label, confidence, probabilities, ...}], "errors": [{name, error}]}.
Folders are searched recursively; symlinks are followed only inside the folder, never into a loop;
skipped entries and unreadable images are listed on stderr (and under "errors"). stderr starts with
one line saying which model answers and what it was trained on (its provenance), and shows a
progress bar over many files when it is a terminal.

Check bins against their expected quantities: `python predict.py --model-dir <dir> --manifest bins.csv
[--out verdicts.csv] [--json]`, where bins.csv has the columns image,expected_quantity (image paths
relative to the CSV). One verdict per row (match | mismatch | review); a row whose image cannot be
read or whose quantity is bad gets its error in its own row, and the rest still run.
docs/warehouse.md has the details.

Exit status:
  0  every image was counted (every manifest row answered)
  1  some inputs were skipped or unreadable, or some manifest rows failed (the others were answered)
  2  bad arguments, or a path or manifest that does not exist
  3  nothing to do: no image file under the given paths (and nothing skipped)
  4  the model failed to load (nothing was counted)
"""

import argparse
import json
import sys

from src.utils.entry import task_wrapper

EXIT_OK, EXIT_SOME_UNREADABLE, EXIT_USAGE, EXIT_NOTHING_TO_DO, EXIT_MODEL_FAILED = 0, 1, 2, 3, 4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__[__doc__.index("Exit status"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="image files or folders (searched recursively)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="model artifact folder (train.py writes <run>/model)")
    source.add_argument("--ckpt", help="a train.py checkpoint (.ckpt)")
    parser.add_argument("--manifest", help="CSV with columns image,expected_quantity: one verdict per row")
    parser.add_argument("--out", help="with --manifest: write the verdicts to this CSV")
    parser.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch",
                        help="onnx-int8 needs --model-dir with model_int8.onnx (export.py --int8)")
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
    except (OSError, ValueError) as err:  # missing, not a regular file, too large, not CSV
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
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
    return EXIT_SOME_UNREADABLE if errors else EXIT_OK


def load(args):
    """The predictor, or None after printing why it failed to load (exit status 4). Once loaded, the
    header line on stderr: the model, what it was trained on, its version (stdout stays one answer a line)."""
    from src.inference.loading import load_predictor
    from src.utils.provenance import describe_line

    try:
        predictor, described = load_predictor(model_dir=args.model_dir, ckpt_path=args.ckpt, backend=args.backend)
    except Exception as err:  # any failure here means no answer at all: say so in one line
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: the model failed to load: {detail}", file=sys.stderr)
        return None
    print(f"# {describe_line(described, args.model_dir or args.ckpt)}", file=sys.stderr)
    return predictor


def predict_with_progress(predictor, found, batch_size: int):
    """``predict_paths`` one batch of files at a time, with a progress bar on stderr when it is a
    terminal (tqdm leaves pipes and logs alone); answers and errors in the same order as one call."""
    from tqdm import tqdm

    from src.data.files import Walk
    from src.serving.predict import PathResults, predict_paths

    if len(found.files) <= batch_size:
        return predict_paths(predictor, found, batch_size=batch_size)
    out = PathResults([], [])
    with tqdm(total=len(found.files), desc="counting", unit="image", disable=None) as bar:
        for start in range(0, len(found.files), batch_size):
            part = Walk(found.files[start:start + batch_size], found.skipped if start == 0 else [])
            done = predict_paths(predictor, part, batch_size=batch_size)
            out.predictions += done.predictions
            out.errors += done.errors
            bar.update(len(part.files))
    return out


@task_wrapper("predict", return_code=True)  # what the exit codes above do not cover: one line, exit status 1
def main(argv=None) -> int:
    args = parse_args(argv)
    from src.serving.predict import find_images

    if args.manifest:
        predictor = load(args)
        return EXIT_MODEL_FAILED if predictor is None else run_manifest(predictor, args)
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

    predictor = load(args)
    if predictor is None:
        return EXIT_MODEL_FAILED
    out = predict_with_progress(predictor, found, args.batch_size)
    if args.json:
        print(json.dumps({"predictions": out.predictions, "errors": out.errors}, indent=2))
    else:
        for p in out.predictions:
            print(f"{p['name']}\t{p['label']}\t{p['confidence']:.3f}")
    for e in out.errors[len(found.skipped):]:  # skipped entries were listed above
        print(f"skipped {e['name']}: {e['error']}", file=sys.stderr)
    return EXIT_SOME_UNREADABLE if out.errors else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
