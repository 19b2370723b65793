"""``python -m clusterforge_pipeline STEP``: run one pipeline step, JSON payload on stdin.

The result is printed as one JSON line, last on stdout, after a marker line; errors go to stderr with
exit status 1 (2 for a bad payload).
"""

from __future__ import annotations

import argparse
import json
import sys

from .spec import SpecError, load_config
from .steps import STEPS, run

MARKER = "--- clusterforge-pipeline result ---"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusterforge_pipeline", description=__doc__)
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--config", help="node configuration (default $CLUSTERFORGE_PIPELINE_CONFIG or /etc)")
    args = parser.parse_args(argv)
    try:
        payload = json.loads(sys.stdin.read() or "{}")
        result = run(args.step, load_config(args.config), payload)
    except (SpecError, json.JSONDecodeError) as exc:
        print(f"clusterforge_pipeline {args.step}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"clusterforge_pipeline {args.step}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    print(MARKER)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
