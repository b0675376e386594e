"""The K curriculum and the EMA momentum against hand computation."""
import math

import pytest

from d2ext_projects.r2o.schedules import k_schedule, momentum_schedule


def test_k_by_hand_at_start_middle_end():
    # 101 iterations, period 1: p = it / 100; K = 4 + 124 cos(pi/2 p)
    assert k_schedule(0, 101, 128, 4, 1) == 128
    assert k_schedule(50, 101, 128, 4, 1) == round(4 + 124 * math.sqrt(0.5))  # 91.68 -> 92
    assert k_schedule(50, 101, 128, 4, 1) == 92
    assert k_schedule(25, 101, 128, 4, 1) == round(4 + 124 * math.cos(math.pi / 8))  # 118.56 -> 119
    assert k_schedule(100, 101, 128, 4, 1) == 4
    # past the end: k_end
    assert k_schedule(101, 101, 128, 4, 1) == 4
    assert k_schedule(10_000, 101, 128, 4, 1) == 4


def test_k_falls_monotonically_and_reaches_k_end_at_the_last_iteration():
    ks = [k_schedule(i, 1000, 64, 2, 7) for i in range(1000)]
    assert ks[0] == 64 and ks[-1] == 2
    assert all(a >= b for a, b in zip(ks, ks[1:]))
    # a quarter cosine: K falls slowly first (less than a quarter of the way at half time)
    assert ks[500] > 2 + 0.6 * 62


def test_k_constant_within_a_period():
    # max_iter 100, period 10: 10 periods, p = j / 9
    for j in range(10):
        expected = round(4 + 124 * math.cos(math.pi / 2 * j / 9))
        assert {k_schedule(i, 100, 128, 4, 10) for i in range(10 * j, 10 * j + 10)} == {expected}
    # a period that does not divide max_iter: the last, short period is k_end
    assert k_schedule(100, 105, 128, 4, 10) == 4
    assert k_schedule(99, 105, 128, 4, 10) == round(4 + 124 * math.cos(math.pi / 2 * 9 / 10))


def test_k_one_period_and_constant_k():
    assert k_schedule(0, 10, 16, 4, 10) == 16 and k_schedule(9, 10, 16, 4, 10) == 16
    assert k_schedule(10, 10, 16, 4, 10) == 4
    assert {k_schedule(i, 50, 8, 8, 3) for i in range(60)} == {8}


@pytest.mark.parametrize(
    "args, key",
    [((0, 10, 4, 8, 1), "MODEL.R2O.KMEANS.K_START"), ((0, 10, 8, 0, 1), "MODEL.R2O.KMEANS.K_END"),
     ((0, 10, 8, 4, 0), "MODEL.R2O.KMEANS.K_UPDATE_PERIOD"), ((0, 0, 8, 4, 1), "SOLVER.MAX_ITER"),
     ((-1, 10, 8, 4, 1), "iteration")],
)
def test_k_invalid_arguments_name_the_key(args, key):
    with pytest.raises(ValueError, match=key):
        k_schedule(*args)


def test_momentum_by_hand():
    assert momentum_schedule(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_schedule(50, 100, 0.99) == pytest.approx(0.995)  # cos = 0: halfway to 1
    assert momentum_schedule(25, 100, 0.99) == pytest.approx(1 - 0.01 * (math.sqrt(0.5) + 1) / 2)
    assert momentum_schedule(100, 100, 0.99) == pytest.approx(1.0)
    assert momentum_schedule(200, 100, 0.99) == pytest.approx(1.0)
    assert momentum_schedule(0, 100, 0.0) == 0.0


@pytest.mark.parametrize("m", [1.0, -0.1, 1.5])
def test_momentum_outside_unit_interval_names_the_key(m):
    with pytest.raises(ValueError, match="MODEL.R2O.BASE_MOMENTUM"):
        momentum_schedule(0, 100, m)
