"""The package as a wheel: it carries its configs, and `pet` runs from any folder.

Builds the wheel from this checkout, unpacks it into a folder of its own and
runs pet from there (first on PYTHONPATH, so the checkout's editable install is
not what runs), from a working directory that is neither.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("pet-*.whl")
    return whl


def test_the_wheel_holds_every_config_file(wheel):
    shipped = {n.removeprefix("pet/conf/") for n in zipfile.ZipFile(wheel).namelist() if n.startswith("pet/conf/")}
    in_checkout = {str(p.relative_to(REPO / "pet" / "conf")) for p in (REPO / "pet" / "conf").rglob("*.yaml")}
    assert in_checkout and shipped == in_checkout


def _run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PET_ROOT", "PET_OUTPUT_ROOT")}
    env["PYTHONPATH"] = str(site)
    code = "import sys, pet.cli; print('pet from', pet.cli.__file__); sys.argv[0] = 'pet'; pet.cli.main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_installed_package_runs_from_another_folder_and_composes_a_users_config_dir(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "my_conf" / "model").mkdir(parents=True)
    (elsewhere / "my_conf" / "model" / "my_small.yaml").write_text(
        "defaults:\n  - transformer_small\n  - _self_\nencoder_layers: 2\ndecoder_layers: 2\n")

    r = _run_installed(site, elsewhere, "stage=summary", "model=transformer_iwslt_de_en", "data.src_vocab_size=8848",
                       "data.tgt_vocab_size=6632", "tracking=none")
    assert r.returncode == 0, r.stderr
    assert f"pet from {site}" in r.stdout
    assert "39,469,056" in r.stdout
    # outputs land under the working directory, not inside the installed package
    assert (elsewhere / "outputs" / "runs" / "summary").is_dir()
    assert not (site / "outputs").exists()

    r = _run_installed(site, elsewhere, "--config-dir", "my_conf", "stage=summary", "model=my_small",
                       "data.src_vocab_size=8848", "data.tgt_vocab_size=6632", "tracking=none", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert "encoder_layers: 2" in r.stdout and "encoder_embed_dim: 256" in r.stdout
