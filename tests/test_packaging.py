"""zk0 installed from its wheel (as the Nix package and images install it) still builds its Flower app."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import io, zipfile
import zk0
from zk0.cli.options import validated_run_config
from zk0.deploy.control import build_fab
from zk0.paths import app_pyproject

assert zk0.__file__.startswith(SITE), zk0.__file__
assert app_pyproject().parent.name == "zk0", app_pyproject()
names = zipfile.ZipFile(io.BytesIO(build_fab())).namelist()
assert "pyproject.toml" in names and "src/zk0/server_app.py" in names, names
print(validated_run_config({"local-steps": 7}).local_steps)
"""


def test_the_wheel_carries_the_app_settings_and_builds_the_app_bundle(tmp_path):
    subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True
    )
    (wheel,) = (tmp_path / "dist").glob("zk0-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)

    result = subprocess.run(
        [sys.executable, "-c", f"SITE = {str(site)!r}\n{PROBE}"],
        env={"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "7"
