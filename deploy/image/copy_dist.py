"""Copy an installed distribution into another venv's site-packages (ADR 0072).

The image's builder compiles llama-cpp-python once, for /opt/novaza, from the hashed sdist in
requirements/runtime.txt. The inference server's venv (/opt/inference) pins the same version
with the same hashes (requirements/inference.txt is compiled with -c runtime.txt), so the
compiled distribution is copied over instead of being built a second time; pip then finds it
installed and satisfied. Every file listed in the distribution's RECORD is copied (the package,
its shared libraries, its .dist-info), except bytecode, whose embedded source paths would name
the other venv: recompile the target afterwards.

Run with the source venv's interpreter: `python copy_dist.py NAME TARGET_SITE_PACKAGES`.
"""

import shutil
import sys
from importlib.metadata import distribution
from pathlib import Path


def copy_dist(name: str, target: Path) -> int:
    dist = distribution(name)
    copied = 0
    for file in dist.files or ():
        # Scripts and data outside site-packages (../../../bin/...) and stale bytecode stay.
        if file.parts[0] == ".." or "__pycache__" in file.parts:
            continue
        dest = target / file
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(str(file.locate())), dest, follow_symlinks=False)
        copied += 1
    if not copied:
        raise SystemExit(f"{name}: no files recorded")
    return copied


if __name__ == "__main__":
    dist_name, target_dir = sys.argv[1:3]
    print(f"{dist_name}: {copy_dist(dist_name, Path(target_dir))} files copied to {target_dir}")
