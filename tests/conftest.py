"""Test-wide settings: import d2ext first (compat), quiet third-party deprecation noise,
and make the repository root importable for tests that run its scripts."""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# Toy datasets are generated once per machine under the default location,
# unless the caller chose another $DETECTRON2_DATASETS.
os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO_ROOT, "datasets"))


import d2ext  # noqa: E402,F401
import pytest  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from d2ext.data.datasets import catalog, toy  # noqa: E402

TINY_TOY_TRAIN, TINY_TOY_VAL = 6, 3


def pytest_configure(config):
    # Third-party noise on every call, harmless here: pycocotools' RLE decoding
    # under numpy 2, torch's deprecation of the JIT that detectron2 0.6 uses.
    for spec in (
        "ignore::DeprecationWarning:pycocotools.*",
        "ignore::FutureWarning:torch.*",
        "ignore::UserWarning:torch.*",
    ):
        config.addinivalue_line("filterwarnings", spec)


@pytest.fixture
def isolated_catalogs():
    """Whatever a test registers or replaces, the catalogs are restored afterwards."""
    datasets, metadata, specs = dict(DatasetCatalog), dict(MetadataCatalog), dict(catalog._SPECS)
    yield
    DatasetCatalog.clear()
    DatasetCatalog.update(datasets)
    MetadataCatalog.clear()
    MetadataCatalog.update(metadata)
    catalog._SPECS.clear()
    catalog._SPECS.update(specs)


@pytest.fixture(scope="session")
def tiny_toy_root(tmp_path_factory) -> str:
    """A datasets root with a tiny toy dataset (6 train, 3 val images), made once per session."""
    root = tmp_path_factory.mktemp("tiny_toy")
    toy.generate_toy_dataset(str(root / "toy"), TINY_TOY_TRAIN, TINY_TOY_VAL, toy.TOY_SEED)
    return str(root)


@pytest.fixture
def tiny_toy(monkeypatch, isolated_catalogs, tiny_toy_root) -> str:
    """The toy dataset names registered on ``tiny_toy_root`` for one test; returns the root."""
    monkeypatch.setattr(toy, "TOY_NUM_TRAIN", TINY_TOY_TRAIN)
    monkeypatch.setattr(toy, "TOY_NUM_VAL", TINY_TOY_VAL)
    toy.register_toy_datasets(tiny_toy_root)
    return tiny_toy_root


@pytest.fixture
def example_method():
    """The tests' example method (tests/example_method.py), its config keys registered for
    this test only: left registered, they would be in every later get_cfg() of the session,
    and a config another test dumps for a fresh interpreter (which never imports the
    example) would carry keys that interpreter does not know."""
    import tests.example_method as example
    from d2ext.config import CONFIG_ADDERS, register_config

    if "example_method" not in CONFIG_ADDERS:  # the first import registered them
        register_config("example_method", example.add_example_config)
    yield example
    CONFIG_ADDERS.remove("example_method")
