"""SASLprep (RFC 4013) with the RFC's own examples."""

from __future__ import annotations

import pytest

from postgate.sasl.saslprep import saslprep
from tests.sasl.rfc import vector


@pytest.mark.parametrize("case", vector("rfc4013_saslprep"), ids=lambda case: case["comment"])
def test_rfc4013_section_3_examples(case: dict[str, str | None]) -> None:
    assert case["input"] is not None
    if case["output"] is None:
        with pytest.raises(ValueError):
            saslprep(case["input"])
    else:
        assert saslprep(case["input"]) == case["output"]


def test_non_ascii_space_becomes_space_and_unassigned_is_refused() -> None:
    assert saslprep("a\u00a0b") == "a b"
    with pytest.raises(ValueError):
        saslprep("\U000e0001")  # tagging character
    with pytest.raises(ValueError):
        saslprep("a\u0221")  # unassigned in Unicode 3.2


def test_right_to_left_alone_is_fine() -> None:
    assert saslprep("\u0627\u0628") == "\u0627\u0628"
