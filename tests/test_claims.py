"""modgap.claims: a notebook's claim prints its figures when it holds and
fails with them when it does not."""
import math

import pytest

from modgap import claims


def test_falls_holds_and_prints(capsys):
    line = claims.falls("the gap shrinks by a quarter", 0.8, 0.5, by=0.25)
    assert line.startswith("claim holds: the gap shrinks by a quarter: 0.800 -> 0.500 (-37.5%")
    assert capsys.readouterr().out.strip() == line


@pytest.mark.parametrize("after", [0.7, 0.8, 0.9])
def test_falls_fails_with_the_figures(after):
    with pytest.raises(claims.ClaimFailed, match=r"claim does not hold: the gap shrinks.*0\.800 ->"):
        claims.falls("the gap shrinks", 0.8, after, by=0.25)


def test_claim_failed_is_an_assertion():
    assert issubclass(claims.ClaimFailed, AssertionError)


def test_holds_within_allows_a_rise_and_a_small_fall():
    claims.holds_within("accuracy holds", 0.95, 0.97, tolerance=0.01)
    claims.holds_within("accuracy holds", 0.95, 0.945, tolerance=0.01, scale=100, unit=" points")
    with pytest.raises(claims.ClaimFailed, match=r"95\.000 -> 93\.000 \(-2\.000 points"):
        claims.holds_within("accuracy holds", 0.95, 0.93, tolerance=0.01, scale=100, unit=" points")


def test_holds_within_refuses_a_negative_tolerance():
    with pytest.raises(ValueError, match="tolerance"):
        claims.holds_within("x", 1, 1, tolerance=-0.1)


def test_rises_needs_more_than_by():
    claims.rises("accuracy rises", 0.5, 0.6, by=0.05)
    with pytest.raises(claims.ClaimFailed):
        claims.rises("accuracy rises", 0.5, 0.52, by=0.05)
    with pytest.raises(claims.ClaimFailed):
        claims.rises("accuracy rises", 0.5, 0.5)


@pytest.mark.parametrize("values, holds", [
    ([0.5, 0.55, 0.6, 0.62], True),
    ([0.5, 0.6, 0.55, 0.58], True),
    ([0.55, 0.55, 0.57, 0.54], False),   # ends below its start
    ([0.5, 0.7, 0.52, 0.51], False),     # second half below the first
])
def test_rises_overall(values, holds):
    if holds:
        assert "claim holds" in claims.rises_overall("pseudo labels improve", values)
    else:
        with pytest.raises(claims.ClaimFailed, match="pseudo labels improve"):
            claims.rises_overall("pseudo labels improve", values)


def test_a_run_without_a_finite_figure_fails_the_claim():
    with pytest.raises(claims.ClaimFailed, match="after is nan"):
        claims.falls("the gap shrinks", 0.8, math.nan)
    with pytest.raises(TypeError, match="before must be a number"):
        claims.rises("x", "high", 1.0)
    with pytest.raises(ValueError, match="at least two"):
        claims.rises_overall("x", [1.0])
    with pytest.raises(TypeError, match="statement"):
        claims.check("", True, "")


def test_exceeds_names_both_figures():
    line = claims.exceeds("photo beats sketch", 0.98, 0.37, by=0.05, names=("photo", "sketch"), digits=1,
                          scale=100, unit=" points")
    assert "photo 98.0 vs sketch 37.0 (+61.0 points" in line
    with pytest.raises(claims.ClaimFailed, match="photo 40.0 vs sketch 37.0"):
        claims.exceeds("photo beats sketch", 0.40, 0.37, by=0.05, names=("photo", "sketch"), digits=1, scale=100)
    with pytest.raises(ValueError, match="two labels"):
        claims.exceeds("x", 1, 0, names=("a",))
