"""The link monitor's pure part: which events turn one link table into another
(what it reports after an overrun, when it re-reads the links)."""

from agent.dataplane.monitor import link_changes


def test_link_changes_reports_added_removed_renamed_and_flapped() -> None:
    before = {1: ("lo", True, 65536), 5: ("caliaaa", True, 1450), 6: ("calibbb", True, 1450),
              7: ("caliccc", False, 1450), 8: ("calimoved", True, 1450),
              10: ("vxlan.calico", True, 1450)}
    after = {1: ("lo", True, 65536), 5: ("caliaaa", True, 1450), 7: ("caliccc", True, 1450),
             8: ("calirenamed", True, 1450), 9: ("calinew", False, 1450),
             10: ("vxlan.calico", True, 1400)}
    assert link_changes(before, after) == [
        ("calibbb", "removed"),
        ("caliccc", "up"),
        ("calimoved", "removed"), ("calirenamed", "added"),
        ("calinew", "added"),
        ("vxlan.calico", "mtu"),
    ]


def test_no_change_no_events() -> None:
    table = {1: ("lo", True, 65536), 5: ("caliaaa", False, 1450)}
    assert link_changes(table, dict(table)) == []
