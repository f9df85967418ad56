"""Command line: ``python -m torchsparse_lite COMMAND ...`` (also ``torchsparse-lite``).

Each command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; only the chosen command's module is imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("torchsparse_lite.train.cmd_train", "train MinkUNet segmentation (synthetic data by default)"),
    "eval": ("torchsparse_lite.train.cmd_eval", "evaluate a segmentation checkpoint (mIoU per class)"),
    "predict": ("torchsparse_lite.train.cmd_predict", "label a scan file with a segmentation checkpoint"),
    "prune": ("torchsparse_lite.prune.cmd_prune", "prune a checkpoint and report size, speed and accuracy"),
    "bench": ("torchsparse_lite.bench.cmd_bench", "benchmark grouping strategies, map builders and peers"),
    "detect": ("torchsparse_lite.detection.cmd_detect", "CenterPoint-style 3D detection: train | eval | predict"),
}


def _usage() -> str:
    lines = ["usage: python -m torchsparse_lite COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "python -m torchsparse_lite COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"python -m torchsparse_lite {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
