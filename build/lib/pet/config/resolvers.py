"""OmegaConf resolvers used by pet/conf/config.yaml."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import OmegaConf

MAX_DIRNAME = 120


_UNSAFE = re.compile(r"[^A-Za-z0-9._:+@-]")


def run_dirname(overrides: str) -> str:
    """A run folder name from the job's overrides (``a=1,b=2`` -> ``a:1+b:2``):
    deterministic (so re-running a command finds its checkpoint), one path
    component (values like ``init_from=a/b.pt`` would otherwise nest folders),
    free of the characters a Hydra override cannot hold unquoted (``=``, ``,``,
    brackets, quotes), so that the path can be passed back as ``init_from=...``,
    and short enough for any filesystem (a long override list is cut and
    suffixed with its hash)."""
    name = _UNSAFE.sub("_", overrides.replace("=", ":").replace(",", "+")) or "default"
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_DIRNAME - 11]}-{digest}"


def repo_root() -> str:
    """Where outputs/ and ../shared are looked for: the checkout when pet runs
    from one (an editable install), whatever the cwd, so every job of a
    project finds the same outputs/; the working directory when pet is an
    installed package (its folder in site-packages is no place for outputs)."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "pet" / "conf").is_dir():
        return str(checkout)
    return str(Path.cwd())


def register() -> None:
    if not OmegaConf.has_resolver("pet.dirname"):
        OmegaConf.register_new_resolver("pet.dirname", run_dirname)
    if not OmegaConf.has_resolver("pet.repo_root"):
        OmegaConf.register_new_resolver("pet.repo_root", repo_root)
