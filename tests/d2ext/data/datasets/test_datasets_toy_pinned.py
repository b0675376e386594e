"""The generated toy data is pinned: tiny generations must equal, byte for byte, the sha256
list in tests/fixtures/toy_sha256.json (made by tests/fixtures/make_toy_sha256.py; its
``toy`` entry by the generator as it was before profiles existed)."""

import json
import os

import pytest

from d2ext.data.datasets import toy_files
from tests.fixtures import make_toy_sha256 as pinned

with open(pinned.FIXTURE) as f:
    FIXTURE = json.load(f)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("case", sorted(pinned.CASES))
def test_generation_matches_the_pinned_hashes(case, threads, tmp_path, monkeypatch):
    if pinned.library_versions() != FIXTURE["versions"]:
        pytest.skip(
            f"hashes were made with {FIXTURE['versions']}, this is {pinned.library_versions()}: "
            "PNG bytes differ between zlib / Pillow versions"
        )
    assert FIXTURE["cases"][case]["args"] == pinned.CASES[case]
    # The bytes must not depend on how many threads generate them.
    monkeypatch.setattr(toy_files, "_num_threads", lambda: threads)
    out = os.path.join(str(tmp_path), case)
    pinned.generate(case, out)
    got, want = pinned.tree_hashes(out), FIXTURE["cases"][case]["files"]
    assert got.keys() == want.keys()
    changed = sorted(k for k in want if got[k] != want[k])
    assert not changed, (
        f"{case}: {len(changed)} generated files changed, e.g. {changed[:3]}. If intended, bump "
        "the profile's version and run tests/fixtures/make_toy_sha256.py"
    )
