"""Which GPUs a job uses: parsing ``--gpus`` and discovering the visible devices."""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import ModelLibsError


def parse_gpus(text: str | None) -> list[int] | None:
    """``"0,1,3"`` -> ``[0, 1, 3]``; ``""``/``"cpu"`` -> ``[]``; ``None`` -> ``None`` (auto)."""
    if text is None:
        return None
    text = text.strip()
    if text.lower() in ("", "cpu", "none"):
        return []
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ModelLibsError(f"--gpus: {part!r} is not a GPU id; give a list like 0,1,2")
        ids.append(int(part))
    if len(set(ids)) != len(ids):
        raise ModelLibsError(f"--gpus: {text!r} names a GPU twice")
    return ids


def visible_gpus() -> list[int]:
    """GPU ids visible to this process: CUDA_VISIBLE_DEVICES, else ``nvidia-smi -L``, else []."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        env = env.strip()
        if env in ("", "-1"):
            return []
        return list(range(len([p for p in env.split(",") if p.strip()])))
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [i for i, line in enumerate(x for x in out.splitlines() if x.startswith("GPU "))]


def resolve_gpus(text: str | None) -> list[int]:
    """The GPU list to use: the one given, else every visible GPU (``[]`` means CPU)."""
    gpus = parse_gpus(text)
    return visible_gpus() if gpus is None else gpus
