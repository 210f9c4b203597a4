"""The link monitor's pure part: which events turn one link table into another
(what it reports after an overrun, when it re-reads the links)."""

from agent.dataplane.monitor import link_changes


def test_link_changes_reports_added_removed_renamed_and_flapped() -> None:
    before = {1: ("lo", True), 5: ("caliaaa", True), 6: ("calibbb", True),
              7: ("caliccc", False), 8: ("calimoved", True)}
    after = {1: ("lo", True), 5: ("caliaaa", True), 7: ("caliccc", True),
             8: ("calirenamed", True), 9: ("calinew", False)}
    assert link_changes(before, after) == [
        ("calibbb", "removed"),
        ("caliccc", "up"),
        ("calimoved", "removed"), ("calirenamed", "added"),
        ("calinew", "added"),
    ]


def test_no_change_no_events() -> None:
    table = {1: ("lo", True), 5: ("caliaaa", False)}
    assert link_changes(table, dict(table)) == []
