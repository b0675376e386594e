"""Install detectron2 0.6's Python package (no compiled ops) unless one is importable.

The registry sdist ``pb1-detectron2==0.6`` has the Python files of detectron2's
v0.6 tag but not its C++ sources, so ``pip install`` cannot build it. We let pip
fetch it by name with its sha256 pinned (pip verifies the archive before it
unpacks it), keep pip's unpacked copy, and copy its ``detectron2/`` package into
site-packages. ``d2ext.compat`` supplies what the missing compiled ops and
today's numpy/Pillow need.

Usage: python tools/install_detectron2.py [--force]
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

SDIST = "pb1-detectron2==0.6"
SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"


def installed_detectron2() -> str | None:
    spec = importlib.util.find_spec("detectron2")
    return None if spec is None else os.path.dirname(spec.origin)


def fetch_and_unpack(workdir: str) -> str:
    """Returns the path of the verified, unpacked ``detectron2/`` package."""
    req = os.path.join(workdir, "requirements.txt")
    with open(req, "w") as f:
        f.write(f"{SDIST} --hash=sha256:{SHA256}\n")
    env = dict(os.environ, TMPDIR=workdir)
    # pip checks the hash, unpacks, then fails to prepare metadata (the sdist
    # declares a direct-URL extra): --no-clean keeps the verified unpacked tree.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
         "--no-clean", "-r", req, "-d", os.path.join(workdir, "dl")],
        env=env, capture_output=True, text=True,
    )
    found = glob.glob(os.path.join(workdir, "pip-*", "pb1-detectron2_*", "detectron2", "__init__.py"))
    if not found:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"could not obtain {SDIST} with sha256 {SHA256} (pip output above)")
    return os.path.dirname(found[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="replace an importable detectron2")
    args = parser.parse_args()
    existing = installed_detectron2()
    if existing and not args.force:
        print(f"detectron2 already importable at {existing}: keeping it")
        return
    target = os.path.join(sysconfig.get_paths()["purelib"], "detectron2")
    with tempfile.TemporaryDirectory(prefix="d2ext-detectron2-") as workdir:
        package = fetch_and_unpack(workdir)
        if os.path.exists(target):
            shutil.rmtree(target)
        shutil.copytree(package, target)
    print(f"installed detectron2 0.6 (Python package, no compiled ops) at {target}")


if __name__ == "__main__":
    main()
