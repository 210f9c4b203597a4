"""tests/support.py's pure helpers: wait_until and the reasons need() gives."""

from __future__ import annotations

import itertools

import pytest

from tests.support import APT_PACKAGES, missing, need, unique_name, wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([0, None, [], "ready"])
    assert wait_until(lambda: next(values), timeout=5, interval=0) == "ready"


def test_wait_until_names_what_it_waited_for_and_the_last_value() -> None:
    counter = itertools.count()
    with pytest.raises(AssertionError) as err:
        wait_until(lambda: next(counter) and [], timeout=0.05, interval=0.01, what="the thing")
    assert "waiting for the thing" in str(err.value)
    assert "last value: []" in str(err.value)


def test_wait_until_lets_the_predicates_errors_through() -> None:
    def broken() -> bool:
        raise KeyError("gone")

    with pytest.raises(KeyError):
        wait_until(broken, timeout=5)


def test_missing_names_the_binary_and_its_package() -> None:
    APT_PACKAGES.setdefault("tortie-no-such-tool", "tortie-pkg")
    try:
        assert missing("sh", "tortie-no-such-tool") == (
            "tortie-no-such-tool not installed (apt package tortie-pkg)")
    finally:
        del APT_PACKAGES["tortie-no-such-tool"]
    assert missing("tortie-unknown-tool") == "tortie-unknown-tool not installed"
    assert missing(files={"/nonexistent/tortie": "some-pkg"}) == (
        "/nonexistent/tortie not installed (apt package some-pkg)")
    assert missing("sh") is None


def test_need_skips_with_the_reason() -> None:
    with pytest.raises(pytest.skip.Exception, match="tortie-unknown-tool not installed"):
        need("tortie-unknown-tool")


def test_unique_names_share_the_prefix_and_nothing_else() -> None:
    a, b = unique_name("n"), unique_name("n")
    assert a != b and a.startswith("tt") and a.endswith("n") and len(a) == 11
