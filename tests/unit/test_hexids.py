import random

import pytest

from keel.core.hexids import hex64, hex128

# Seeded: every pytest-xdist worker must collect the same parameters.
_RNG = random.Random(128)


@pytest.mark.parametrize("value", [0, 1, 0xF, 2**63, 2**64 - 1, *(_RNG.getrandbits(64) for _ in range(50))])
def test_hex64_is_the_zero_padded_16_digit_form(value: int) -> None:
    assert hex64(value) == format(value, "016x")


@pytest.mark.parametrize(
    "value", [0, 1, 2**64, 2**127, 2**128 - 1, *(_RNG.getrandbits(128) for _ in range(50))]
)
def test_hex128_is_the_zero_padded_32_digit_form(value: int) -> None:
    assert hex128(value) == format(value, "032x")


def test_an_id_wider_than_its_form_is_refused_not_cut() -> None:
    with pytest.raises(OverflowError):
        hex64(2**64)
    with pytest.raises(OverflowError):
        hex128(2**128)
