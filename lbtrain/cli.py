"""`lbtrain`: one command line for every part. Each subcommand owns its own parser and is
imported only when called, so `lbtrain webhook` never imports torch and `lbtrain --help` is fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from lbtrain import __version__

# name -> (module holding `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "webhook": (
        "lbtrain_webhook.cli",
        "serve the Labelbox model-training webhook (GET /models, POST /model_run)",
    ),
    "operator": (
        "lbtrain_operator.cli",
        "run the operator: ModelRuns become GPU Jobs mirrored to Labelbox",
    ),
    "trainer": (
        "lbtrain_trainer.cli",
        "trainer stages: export | prepare | train | run (inside the trainer image)",
    ),
    "testbed": (
        "lbtrain.testbed.cli",
        "a local Kubernetes control plane for development: up | down | env | status",
    ),
    "fake-labelbox": (
        "lbtrain.devtools.fake_labelbox.cli",
        "a fake Labelbox API for local runs and tests",
    ),
    "demo": (
        "lbtrain.devtools.demo",
        "the whole flow on this machine, no cluster, GPU or Labelbox account",
    ),
}


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        f"usage: lbtrain <command> [options]      (lbtrain {__version__})",
        "",
        "Train Labelbox model runs on your own Kubernetes cluster.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()),
        "",
        "Run `lbtrain <command> --help` for a command's options.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] == "--version":
        print(f"lbtrain {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"lbtrain: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = (
            " (install the trainer extra: pip install 'lbtrain[trainer]')"
            if name == "trainer"
            else ""
        )
        print(f"lbtrain {name}: not available: {exc}{hint}", file=sys.stderr)
        return 2
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
