"""Export a checkpoint to the model artifact layout (optionally with ONNX).

    python export.py <run>/checkpoints/epoch_007.ckpt --out <dir>/model [--onnx]
    python export.py --model-dir <run>/model --onnx      # add model.onnx to an existing artifact
    python export.py --model-dir <run>/model --int8 --calib-data data/abid   # + model_int8.onnx

--int8 calibrates on --calib-images images of <calib-data>/train, compares fp32 and int8 accuracy on
<calib-data>/val and refuses (exit status 1, nothing written) when int8 loses more than
--int8-tolerance points; docs/serving_performance.md has the details.

Writes <out>/model.pt, model_config.json, code/ and <out>/../model.tar.gz. The backbone is
recognised from the checkpoint's weights; --net-name/--image-size/--decision-rule override.
Re-exporting a --model-dir keeps its answer settings (overflow class, temperature, review and
verdict thresholds); a checkpoint carries only the overflow class: train.py fits the rest.
"""

import argparse
import sys

from src.utils.entry import task_wrapper


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", nargs="?", help="a train.py checkpoint (.ckpt)")
    parser.add_argument("--out", help="artifact folder to write (default: <run>/model beside checkpoints/)")
    parser.add_argument("--model-dir", help="an existing artifact to re-export (with --onnx)")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (ONNX Runtime backend)")
    parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx (backend onnx-int8)")
    parser.add_argument("--calib-data", help="--int8: prepared data folder with train/ (calibration) and val/")
    parser.add_argument("--calib-images", type=int, default=300, help="--int8: training images to calibrate on")
    parser.add_argument("--calib-method", choices=["auto", "minmax", "entropy", "percentile"], default="auto",
                        help="--int8: activation calibration (auto: try each, keep the most accurate on val)")
    parser.add_argument("--int8-tolerance", type=float, default=0.5,
                        help="--int8: most validation accuracy points int8 may lose (default 0.5)")
    parser.add_argument("--val-images", type=int, help="--int8: check on this many val images (default all)")
    parser.add_argument("--net-name")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--decision-rule", choices=["argmax", "expected"])
    args = parser.parse_args(argv)
    if bool(args.ckpt) == bool(args.model_dir):
        parser.error("give a checkpoint or --model-dir, not both")
    if args.int8 and not args.calib_data:
        parser.error("--int8 needs --calib-data <prepared data folder with train/ and val/>")
    args.reexport = not (args.model_dir and args.int8 and not args.onnx and not args.out)
    args.onnx = args.onnx or args.int8  # the int8 model is quantized from model.onnx
    return args


@task_wrapper("export", return_code=True)  # a missing checkpoint, a broken artifact, int8 refused: one line, exit status 1
def main(argv=None) -> int:
    from pathlib import Path

    from src.inference.artifact import answer_settings, export_artifact, load_artifact, tarball_path

    args = parse_args(argv)
    if args.model_dir and not args.reexport and (Path(args.model_dir) / "model.onnx").is_file():
        out = Path(args.model_dir)  # --model-dir --int8 only adds model_int8.onnx beside model.onnx
    elif args.model_dir:
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
    if args.int8:
        from src.inference.quantize import build_int8

        report = build_int8(out, args.calib_data, args.calib_images, args.calib_method, args.int8_tolerance,
                            args.val_images)
        print(f"int8:     {out / 'model_int8.onnx'} ({report.method}, {report.calibration_images} calibration images); "
              f"val accuracy fp32 {report.val_acc_fp32:.2f} % -> int8 {report.val_acc_int8:.2f} % "
              f"(drop {report.drop:.2f} points on {report.val_images} images, {report.agreement:.1f} % answered alike)"
              + (f"; tried {report.tried}" if report.tried else ""))
    print(f"artifact: {out}\ntarball:  {tarball_path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
