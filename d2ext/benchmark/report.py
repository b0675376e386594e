"""The json a benchmark tool writes with ``--output``: its command, arguments,
environment, results and the Markdown rows it printed."""
from __future__ import annotations

import json
import os
import shlex
from typing import Any, Dict, List, Optional, Sequence

from .environment import environment

__all__ = ["tool_report", "write_json"]


def write_json(path: str, payload: Dict[str, Any]) -> None:
    """Writes ``payload`` to ``path`` (indented), creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def tool_report(
    script: str, argv: Optional[Sequence[str]], args, results: Any, markdown: List[str]
) -> Dict[str, Any]:
    """The report of ``python <script> <argv>`` (``args``: its parsed arguments, with
    ``device`` and ``output``), written to ``args.output`` when that is set."""
    payload = {
        "command": " ".join(["python", script] + [shlex.quote(a) for a in argv]),
        "args": vars(args),
        "environment": environment(args.device),
        "results": results,
        "markdown": markdown,
    }
    if args.output:
        write_json(args.output, payload)
    return payload
