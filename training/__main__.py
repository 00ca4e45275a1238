"""``python -m training <command>``: download, subset, train, evaluate, export (each has --help)."""
import argparse
import importlib
import sys

COMMANDS = {
    "download": ("training.download", "fetch COCO 2014 images and annotations (resumable, verified)"),
    "subset": ("training.subset", "select the central-person images of an annotations file"),
    "train": ("training.train", "fine-tune the 2-class person heads (torchrun for several GPUs)"),
    "evaluate": ("training.evaluate", "per-image IoU, summary table, IoU-per-epoch plot, segm AP"),
    "export": ("training.export", "write an epoch's head for BGREMOVAL_WEIGHTS"),
}


def get_parser():
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(
            name, help=help_text, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.get_args_parser(sub_parser)
        sub_parser.set_defaults(_main=module.main)
    return parser


def main(argv=None):
    """Parse ``argv`` and run the command."""
    args = get_parser().parse_args(argv)
    run = args._main
    del args._main, args.command  # vars(args) is stored in checkpoints: keep it to the command's own flags
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
