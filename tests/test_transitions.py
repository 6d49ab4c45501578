import numpy as np
import pytest

from longvid.transitions import crossfade


def test_crossfade_ramps_linearly_and_never_copies_an_end():
    a = np.zeros((3, 2, 2, 3), np.uint8)
    b = np.full((3, 2, 2, 3), 200, np.uint8)
    mixed = crossfade(a, b)
    assert [int(f[0, 0, 0]) for f in mixed] == [50, 100, 150]


def test_crossfade_needs_equal_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        crossfade(np.zeros((2, 2, 2, 3), np.uint8), np.zeros((3, 2, 2, 3), np.uint8))
