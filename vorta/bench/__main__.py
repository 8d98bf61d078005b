"""``python -m comfyui_vorta.vorta.bench {e2e,kernels,profile,transfer,calibrate} [args...]``: dispatch to one benchmark."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"e2e": "e2e", "kernels": "kernels", "profile": "profile_routed", "transfer": "calibration_transfer",
            "calibrate": "calibration_cost"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m comfyui_vorta.vorta.bench {{{','.join(COMMANDS)}}} [args...]  (-h after a command "
              f"for its options)", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__package__}.{COMMANDS[argv[0]]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
