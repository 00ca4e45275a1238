"""``python -m app``: remove backgrounds from files, refine masks, prefetch or export weights, run the bot."""
import argparse
import logging
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .config import load_config
from .engines import EngineRegistry
from .errors import BgRemovalError, ModelUnavailable
from .imaging import decode_image
from .params import add_cli_arguments, cli_params, parse_options
from .pipeline import remove_background
from .refine import refine_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo"}
OUTPUT_SUFFIX = "_bgr"  # what `remove` appends to a name: photo.jpg -> photo_bgr.png
FORMAT_OF_SUFFIX = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}
# Native runtime chatter on stderr (LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.").
NATIVE_NOISE = re.compile(r"^INFO: .*TensorFlow Lite")


def _add_output_options(parser):
    parser.add_argument("--bg-image", type=Path, help="an image to place behind the subject")
    add_cli_arguments(parser)


def build_parser():
    """The argparse parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m app", description="Background removal for photos of people.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and model loading")
    sub = parser.add_subparsers(dest="command", required=True)

    remove = sub.add_parser("remove", help="cut out the person in one or more photos (files or folders)")
    remove.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    where = remove.add_mutually_exclusive_group()
    where.add_argument("-o", "--out", type=Path, help="output file (one input only)")
    where.add_argument("--out-dir", type=Path, help="folder for the outputs (default: next to each input)")
    _add_output_options(remove)

    batch = sub.add_parser("batch", help="cut out a whole tree of photos on Ray (this machine or a cluster), with a manifest")
    batch.add_argument("source", metavar="IN", help="folder of images (or s3://…, gs://…), read recursively")
    batch.add_argument("dest", metavar="OUT", help="folder for the mirrored cutouts and manifest.jsonl (or s3://…, gs://…)")
    batch.add_argument("--workers", type=int, help="Ray actors, one engine each (default: one per CPU)")
    batch.add_argument("--address", help="join a running Ray cluster: auto or HOST:PORT (default: start Ray here)")
    batch.add_argument("--batch-size", type=int, default=16, help="photos per task (default 16)")
    batch.add_argument("--overwrite", action="store_true", help="redo inputs whose output exists (default: skip them)")
    _add_output_options(batch)

    refine = sub.add_parser("refine", help="refine a mask from anywhere against its photo")
    refine.add_argument("photo", type=Path, help="the photo")
    refine.add_argument("mask", type=Path, help="a grey PNG mask, soft or hard, any size")
    refine.add_argument("-o", "--out", type=Path, required=True, help="output 8-bit alpha PNG at the photo's size")
    refine.add_argument("--method", help="refinement method (default: the configured one)")

    download = sub.add_parser("download-weights", help="prefetch model weights into the cache (for a build step)")
    download.add_argument("--model", choices=["maskrcnn", "selfie", "all"], default=None, help="which engine's weights (default: BGREMOVAL_MODEL)")

    export = sub.add_parser("export", help="export Mask R-CNN to ONNX for the torch-free runtime (needs torch and onnx)")
    quantize = sub.add_parser("quantize", help="make an int8 copy of the export and report how far it is from fp32")
    for command, default in ((export, "WEIGHTS_DIR/maskrcnn.onnx"), (quantize, "the export's name with .int8.onnx")):
        command.add_argument("-o", "--out", type=Path, help=f"output file (default: {default})")
    quantize.add_argument("--calibration", type=Path, required=True, help="a folder of typical photos (calibration and the report)")
    quantize.add_argument("--limit", type=int, default=100, help="at most this many photos (default 100)")

    telegram = sub.add_parser("telegram", help="run or configure the Telegram bot")
    tsub = telegram.add_subparsers(dest="telegram_command", required=True)
    tsub.add_parser("poll", help="long-poll the Bot API (no public HTTPS URL needed)")
    hook = tsub.add_parser("set-webhook", help="point the bot's webhook at URL (…/telegram/webhook)")
    hook.add_argument("url", help="public HTTPS URL of /telegram/webhook")
    return parser


def is_own_output(path):
    """True for a file this tool wrote (``name_bgr.png``): a folder run does not cut out its own outputs."""
    return path.stem.endswith(OUTPUT_SUFFIX)


def expand_inputs(inputs, skip=()):
    """``(files, skipped)``: each file as ``(path, folder it was found in or None)``, folders walked in sorted order.

    In folders, this tool's earlier outputs (``*_bgr.*``) and anything under ``skip`` (the output
    folder) are left out and counted in ``skipped``; files named on the command line are kept.
    """
    skip = [p.resolve() for p in skip]
    files, skipped = [], 0
    for path in inputs:
        if not path.is_dir():
            files.append((path, None))
            continue
        for found in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            if is_own_output(found) or any(found.resolve().is_relative_to(s) for s in skip):
                skipped += 1
            else:
                files.append((found, path))
    return files, skipped


def output_path(src, folder, args, fmt):
    """Where the cutout of ``src`` goes: ``-o``; under ``--out-dir`` mirroring its place in ``folder``; or beside it."""
    if args.out:
        return args.out
    name = f"{src.stem}{OUTPUT_SUFFIX}.{fmt}"
    if not args.out_dir:
        return src.with_name(name)
    relative = src.parent.relative_to(folder) if folder is not None else Path()
    return args.out_dir / relative / name


def output_format(args, params):
    """The format ``-o``'s extension names, checked against ``--format``; raise ValueError on a conflict."""
    if not args.out:
        return params.get("format")
    named = FORMAT_OF_SUFFIX.get(args.out.suffix.lower())
    given = params.get("format")
    if named is None and given is None:
        raise ValueError(f"-o {args.out}: the extension names no output format; use .png, .jpg or .webp, or --format")
    if named is not None and given is not None and named != given:
        raise ValueError(f"-o {args.out} is a .{args.out.suffix.lower().lstrip('.')} file but --format says {given}; drop one of them")
    return given or named


def background_conflict(args, params):
    """Why the background options contradict each other, or None (an image, a blur and a colour are each a background)."""
    chosen = []
    if args.bg_image:
        chosen.append(f"--bg-image {args.bg_image}")
    if params.get("bg_blur") or str(params.get("bg_color") or "").lower() == "blur":
        chosen.append("--blur")
    elif params.get("bg_color"):
        chosen.append(f"--bg-color {params['bg_color']}")
    return f"{' and '.join(chosen)} both set the background; choose one" if len(chosen) > 1 else None


def read_background(path, config):
    """The ``--bg-image`` bytes, decoded once up front so a bad file is reported as the background, not as each photo."""
    try:
        data = path.read_bytes()
        decode_image(data, max_pixels=int(config.get("MAX_PIXELS", 40_000_000)), min_side=1)
    except OSError as exc:
        raise ValueError(f"--bg-image {path}: {exc.strerror or exc}") from exc
    except BgRemovalError as exc:
        raise ValueError(f"--bg-image {path}: {exc.title}{' ' + str(exc.detail) if exc.detail else ''}") from exc
    return data


@contextmanager
def native_stderr_filtered(enabled=True):
    """Hold the process's native stderr (fd 2) while loading a runtime; pass on all but its INFO chatter.

    Python's own ``sys.stderr`` keeps writing to the terminal meanwhile (through a copy of fd 2).
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        sys.stderr = open(os.dup(saved), "w", encoding=python_stderr.encoding or "utf-8", errors="replace")  # closed below
        try:
            yield
        finally:
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not NATIVE_NOISE.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def cutout_options(args, config, params=None):
    """The ``CutoutOptions`` of the output options (``remove`` and ``batch`` share them); raises ValueError or BgRemovalError on bad ones."""
    params = params or cli_params(args)
    conflict = background_conflict(args, params)
    if conflict:
        raise ValueError(conflict)
    options = parse_options(params, config)
    if args.bg_image:
        options.bg_image = read_background(args.bg_image, config)
    return options


def cmd_remove(args, config):
    """Cut out every input with one model load; exit 1 if any file failed; print a one-line summary."""
    started = time.perf_counter()
    files, skipped = expand_inputs(args.inputs, skip=[args.out_dir] if args.out_dir else [])
    if args.out and len(files) != 1:
        print("error: -o/--out takes exactly one input; use --out-dir for several", file=sys.stderr)
        return 2
    if not files:
        print(f"error: no images found{f' (skipped {skipped} earlier outputs)' if skipped else ''}", file=sys.stderr)
        return 2
    params = cli_params(args)
    try:
        params["format"] = output_format(args, params)
        options = cutout_options(args, config, params)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BgRemovalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    destinations = {}
    for src, folder in files:
        dest = output_path(src, folder, args, options.format)
        if dest in destinations:
            print(f"error: {destinations[dest]} and {src} would both be written to {dest}; rename one or use -o", file=sys.stderr)
            return 2
        destinations[dest] = src
    try:
        registry = EngineRegistry(config)
        if registry.fallback and not options.model:
            print(f"note: {registry.fallback}", file=sys.stderr)
        with native_stderr_filtered(enabled=not args.verbose):
            engine = registry.get(options.model)
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except BgRemovalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = people = 0
    progress = None
    if len(files) > 1 or any(p.is_dir() for p in args.inputs):
        progress = tqdm(total=len(files), unit="img", file=sys.stderr)
    for dest, src in destinations.items():
        try:
            data = src.read_bytes()
            cutout = remove_background(data, engine, options, config)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(cutout.data)
            people += cutout.people
            logging.getLogger(__name__).info("%s -> %s (%dx%d, score %.2f)", src, dest, cutout.width, cutout.height, cutout.score)
        except BgRemovalError as exc:
            failures += 1
            _report(progress, f"{src}: {exc.code}: {exc}")
        except OSError as exc:
            failures += 1
            _report(progress, f"{src}: {exc.strerror or exc}")
        if progress:
            progress.update(1)
    if progress:
        progress.close()
    print(summary(len(files), failures, people, skipped, time.perf_counter() - started, engine.name, args))
    return 1 if failures else 0


def summary(total, failures, people, skipped, seconds, engine, args):
    """One line: how many files were cut out, how many people, how long, where to."""
    done = total - failures
    where = f" into {args.out_dir}" if args.out_dir else (f" to {args.out}" if args.out else "")
    text = f"{done} of {total} file{'s' if total != 1 else ''} cut out{where} ({people} {'person' if people == 1 else 'people'}, {engine}) in {seconds:.1f} s"
    if failures:
        text += f"; {failures} failed (above)"
    if skipped:
        text += f"; skipped {skipped} earlier output{'s' if skipped != 1 else ''} (*{OUTPUT_SUFFIX}.*)"
    return text


def _report(progress, line):
    if progress:
        progress.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def cmd_batch(args, config):
    """Cut out a tree of photos on Ray; exit 1 if any failed, 3 without a model."""
    if (args.workers is not None and args.workers < 1) or args.batch_size < 1:
        print("error: --workers and --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        options = cutout_options(args, config)
    except (ValueError, BgRemovalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        # Ray is imported here only: remove, the web app and the bot never load it.
        from .batch.job import run_batch
    except ImportError as exc:
        print(f"error: the batch command needs Ray ({exc}); pip install -r requirements-batch.txt", file=sys.stderr)
        return 2
    try:
        return run_batch(args.source, args.dest, options, config, workers=args.workers, address=args.address,
                         batch_size=args.batch_size, overwrite=args.overwrite)
    except KeyboardInterrupt:
        return 130  # Ctrl-C: run_batch has shut Ray down and said how to resume


def check_mask(photo_path, mask_path):
    """Warnings about a mask for ``photo_path``; a ValueError naming the right file when ``mask_path`` is not a mask."""
    sizes = {}
    for role, path in (("PHOTO", photo_path), ("MASK", mask_path)):
        try:
            with Image.open(path) as img:
                sizes[role] = img.size
                if role == "MASK":
                    deep = img.mode.startswith("I") or img.mode == "F"  # 16-bit or float greys: grey by definition
                    pixels = None if deep else np.asarray(img.convert("RGBA"))
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{role} {path} is not an image we can read ({exc})") from exc
    if pixels is not None:
        rgb = pixels[..., :3].astype(np.int16)
        colourful = (np.ptp(rgb, axis=-1) > 24).mean() > 0.01
        if colourful and pixels[..., 3].min() < 255:
            raise ValueError(f"MASK {mask_path} is a cutout with transparency, not a mask; `python -m app remove --mask` writes a mask")
        if colourful:
            raise ValueError(f"MASK {mask_path} is a colour image, not a mask (a mask is greyscale, white where the person is); are PHOTO and MASK swapped?")
        if rgb.min() == rgb.max():
            raise ValueError(f"MASK {mask_path} is one grey value ({int(rgb.min())}) everywhere: it marks no person")
    (pw, ph), (mw, mh) = sizes["PHOTO"], sizes["MASK"]
    if abs(pw / ph - mw / mh) > 0.02 * (pw / ph):
        return [f"note: MASK {mask_path} is {mw}×{mh} and PHOTO {photo_path} is {pw}×{ph}: the mask is stretched to the photo's shape"]
    return []


def cmd_refine(args, config):
    """Refine one mask against its photo, after checking that the mask is one."""
    try:
        for line in check_mask(args.photo, args.mask):
            print(line, file=sys.stderr)
        refine_file(args.photo, args.mask, args.out, method=args.method or config["REFINE"])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BgRemovalError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"refined {args.mask} against {args.photo} into {args.out}")
    return 0


def cmd_download(args, config):
    """Prefetch weights so the first request does not wait for them: every engine asked for, each reported; exit 3 if any failed."""
    which = args.model or config["MODEL"]
    names = ["maskrcnn", "selfie"] if which == "all" else [which]
    failed = []
    for name in names:
        try:
            if name == "maskrcnn":
                from .engines.maskrcnn_weights import download_base_weights  # imports torch: only when asked

                paths = [download_base_weights(config)]
            else:
                from .engines.selfie import fetch_weights  # imports LiteRT: only when asked

                paths = list(fetch_weights(config).values())
        except (BgRemovalError, ImportError) as exc:
            failed.append(name)
            print(f"{name}: failed: {exc}", file=sys.stderr)
            continue
        for path in paths:
            print(f"{name}: {path}")
    if len(names) > 1:
        print(f"fetched {len(names) - len(failed)} of {len(names)}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 3 if failed else 0


def cmd_export(args, config):
    """Export the configured Mask R-CNN weights to ONNX (needs torch and onnx)."""
    from .export import run  # imports torch and onnx: only when asked

    return run(config, args.out)


def cmd_quantize(args, config):
    """Write an int8 copy of the export and report how far it is from fp32 on the photos."""
    from .quantize import run  # imports ONNX Runtime: only when asked

    files, _ = expand_inputs([args.calibration])
    return run(config, [path for path, _ in files][: args.limit], args.out)


def cmd_telegram(args, config):
    """Run the bot by long polling, or set its webhook."""
    from . import telegram  # imports Flask: only for the bot

    return telegram.main(args, config)


def main(argv=None):
    """Entry point of ``python -m app``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_config()
    commands = {"remove": cmd_remove, "batch": cmd_batch, "refine": cmd_refine, "download-weights": cmd_download, "export": cmd_export, "quantize": cmd_quantize, "telegram": cmd_telegram}
    return commands[args.command](args, config)
