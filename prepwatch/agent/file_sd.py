"""Prometheus file-based service discovery: one target file per agent, written atomically.

Prometheus (``file_sd_configs: [{files: [DIR/*.json]}]``) re-reads the folder when a file
appears, changes or goes away, so an agent that writes its file once it listens and
removes it when it stops is discovered and forgotten without touching Prometheus' config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_target(path: Path, target: str, labels: dict[str, str]) -> Path:
    """Write ``[{"targets": [target], "labels": labels}]`` to ``path`` atomically.

    The temporary name does not end in ``.json``, so Prometheus never reads half a file;
    0644 because Prometheus usually runs as another user.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"prepwatch: file_sd folder {path.parent} does not exist; create it on a filesystem "
            "Prometheus reads (file_sd_configs: files: [<folder>/*.json])"
        )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps([{"targets": [target], "labels": labels}], indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def remove_target(path: Path) -> None:
    """Remove a target file; already gone is fine (an epilog may have cleaned up)."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass
