import pytest

from d2ext.engine import load_cfg


def test_override_keys_are_applied():
    cfg = load_cfg("", ["SOLVER.MAX_ITER", "7"])
    assert cfg.SOLVER.MAX_ITER == 7


def test_option_among_overrides_is_named():
    # `tool ... KEY VALUE --flag X`: argparse puts --flag into the overrides
    with pytest.raises(ValueError, match="'--compare-opts'.*before the KEY VALUE overrides"):
        load_cfg("", ["MODEL.WEIGHTS", "a.pth", "--compare-opts", "MODEL.WEIGHTS b.pth"])
