"""Export a checkpoint to the model artifact layout (optionally with ONNX).

    python export.py <run>/checkpoints/epoch_007.ckpt --out <dir>/model [--onnx]
    python export.py --model-dir <run>/model --onnx      # add model.onnx to an existing artifact

Writes <out>/model.pt, model_config.json, code/ and <out>/../model.tar.gz. The backbone is
recognised from the checkpoint's weights; --net-name/--image-size/--decision-rule override.
Re-exporting a --model-dir keeps its answer settings (overflow class, temperature, review and
verdict thresholds); a checkpoint carries only the overflow class: train.py fits the rest.
"""

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", nargs="?", help="a train.py checkpoint (.ckpt)")
    parser.add_argument("--out", help="artifact folder to write (default: <run>/model beside checkpoints/)")
    parser.add_argument("--model-dir", help="an existing artifact to re-export (with --onnx)")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (ONNX Runtime backend)")
    parser.add_argument("--net-name")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--decision-rule", choices=["argmax", "expected"])
    args = parser.parse_args(argv)
    if bool(args.ckpt) == bool(args.model_dir):
        parser.error("give a checkpoint or --model-dir, not both")
    return args


def main(argv=None) -> int:
    from pathlib import Path

    from src.inference.artifact import answer_settings, export_artifact, load_artifact, tarball_path

    args = parse_args(argv)
    if args.model_dir:
        net, config = load_artifact(args.model_dir)
        out = export_artifact(
            net, config["image_size"], config["decision_rule"], args.out or args.model_dir, onnx=args.onnx,
            answers=answer_settings(config),
        )
    else:
        from src.inference.checkpoint import load_checkpoint

        loaded = load_checkpoint(args.ckpt, args.net_name, args.image_size, args.decision_rule)
        default = Path(args.ckpt).resolve().parent.parent / "model"
        out = export_artifact(
            loaded.net, loaded.image_size, loaded.decision_rule, args.out or default, onnx=args.onnx,
            answers={"overflow": True} if loaded.overflow else None,
        )
    print(f"artifact: {out}\ntarball:  {tarball_path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
