"""docs/official_configs.md lists every copy of an official config, and nothing else."""
import glob
import os
import re

from tests.conftest import REPO_ROOT

FAMILIES = ("pointrend", "maskformer", "mask2former")


def test_every_official_config_copy_is_listed_once():
    with open(os.path.join(REPO_ROOT, "docs", "official_configs.md")) as f:
        text = f.read()
    listed = []
    for section in re.split(r"\n## ", text)[1:]:
        root = re.search(r"under `(configs/\w+)/`", section).group(1)
        listed += [f"{root}/{rel}" for rel in re.findall(r"^\| `([^`]+\.yaml)` \|", section, re.M)]
    on_disk = sorted(
        os.path.relpath(p, REPO_ROOT)
        for family in FAMILIES
        for p in glob.glob(os.path.join(REPO_ROOT, "configs", family, "**", "*.yaml"), recursive=True)
        if "/toy/" not in p and not os.path.basename(p).startswith("Base-")
    )
    assert sorted(listed) == on_disk
    assert len(on_disk) == 8 + 30 + 47
