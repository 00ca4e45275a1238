"""``python -m app``: remove backgrounds from files, refine masks, prefetch weights, run the bot."""
import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from .config import load_config
from .engines import EngineRegistry
from .errors import BgRemovalError, ModelUnavailable
from .params import add_cli_arguments, cli_params, parse_options
from .pipeline import remove_background
from .refine import refine_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo"}


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

    telegram = sub.add_parser("telegram", help="run or configure the Telegram bot")
    tsub = telegram.add_subparsers(dest="telegram_command", required=True)
    tsub.add_parser("poll", help="long-poll the Bot API (no public HTTPS URL needed)")
    hook = tsub.add_parser("set-webhook", help="point the bot's webhook at URL (…/telegram/webhook)")
    hook.add_argument("url", help="public HTTPS URL of /telegram/webhook")
    return parser


def expand_inputs(inputs):
    """Files as given, folders expanded (recursively) to the images inside them, in sorted order."""
    files = []
    for path in inputs:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        else:
            files.append(path)
    return files


def output_path(src, args, fmt):
    """Where the cutout of ``src`` goes: ``-o``, ``--out-dir``, or ``<name>_bgr.<ext>`` beside it."""
    if args.out:
        return args.out
    name = f"{src.stem}_bgr.{fmt}"
    return (args.out_dir / name) if args.out_dir else src.with_name(name)


def cutout_options(args, config):
    """The ``CutoutOptions`` of the output options (``remove`` and ``batch`` share them); raises on bad ones."""
    options = parse_options(cli_params(args), config)
    if args.bg_image:
        options.bg_image = args.bg_image.read_bytes()
    return options


def cmd_remove(args, config):
    """Cut out every input with one model load; exit 1 if any file failed."""
    files = expand_inputs(args.inputs)
    if args.out and len(files) != 1:
        print("error: -o/--out takes exactly one input; use --out-dir for several", file=sys.stderr)
        return 2
    if not files:
        print("error: no images found", file=sys.stderr)
        return 2
    try:
        options = cutout_options(args, config)
        registry = EngineRegistry(config)
        if registry.fallback and not options.model:
            print(f"note: {registry.fallback}", file=sys.stderr)
        engine = registry.get(options.model)
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (BgRemovalError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    progress = None
    if len(files) > 1 or any(p.is_dir() for p in args.inputs):
        progress = tqdm(total=len(files), unit="img", file=sys.stderr)
    for src in files:
        try:
            data = src.read_bytes()
            cutout = remove_background(data, engine, options, config)
            dest = output_path(src, args, cutout.format)
            dest.write_bytes(cutout.data)
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
    return 1 if failures else 0


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
    except (BgRemovalError, OSError) as exc:
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


def cmd_refine(args, config):
    """Refine one mask against its photo."""
    try:
        refine_file(args.photo, args.mask, args.out, method=args.method or config["REFINE"])
    except (BgRemovalError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_download(args, config):
    """Prefetch weights so the first request does not wait for them."""
    which = args.model or config["MODEL"]
    names = ["maskrcnn", "selfie"] if which == "all" else [which]
    try:
        for name in names:
            if name == "maskrcnn":
                from .engines.maskrcnn import download_base_weights  # imports torch: only when asked

                print(download_base_weights(config))
            else:
                from .engines.selfie import fetch_weights  # imports LiteRT: only when asked

                for path in fetch_weights(config).values():
                    print(path)
    except BgRemovalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


def cmd_telegram(args, config):
    """Run the bot by long polling, or set its webhook."""
    from . import telegram  # imports Flask: only for the bot

    return telegram.main(args, config)


def main(argv=None):
    """Entry point of ``python -m app``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_config()
    commands = {"remove": cmd_remove, "batch": cmd_batch, "refine": cmd_refine, "download-weights": cmd_download, "telegram": cmd_telegram}
    return commands[args.command](args, config)
