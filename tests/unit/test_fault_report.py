"""The fault suite's probe arithmetic (tests/faults/prober.py): counts, outages, the report."""

from __future__ import annotations

import pytest

from tests.faults.prober import PairReport, ProbeReport, Sample, summarize


def samples(pattern: str, start: float = 10.0, step: float = 0.1) -> list[Sample]:
    """'.' an answered probe, 'x' a lost one, sent `step` apart from `start`."""
    return [Sample(start + i * step, c == ".") for i, c in enumerate(pattern)]


def test_nothing_lost_is_no_outage():
    report = summarize("a -> b", "TCP", samples("....."))
    assert (report.sent, report.lost, report.longest_outage, report.outage_starts) == \
        (5, 0, 0.0, ())


def test_an_outage_runs_from_its_first_lost_probe_to_the_next_answered_one():
    report = summarize("a -> b", "ICMP", samples("..xxx..x."))
    assert (report.sent, report.lost) == (9, 4)
    assert report.longest_outage == pytest.approx(0.3)  # sent at 10.2, answered again at 10.5
    assert report.outage_starts == pytest.approx((10.2, 10.7))


def test_an_outage_still_running_at_the_end_counts_one_interval_past_the_last_probe():
    report = summarize("a -> b", "TCP", samples("..xx"), interval=0.1)
    assert report.longest_outage == pytest.approx(0.2)  # from 10.2 to 10.3 + 0.1


def test_a_slow_probe_stretches_the_outage_to_the_next_answer_not_by_a_count():
    # A lost probe that waited 0.5 s: the next one went out at 10.6.
    report = summarize("a -> b", "TCP", [Sample(10.0, True), Sample(10.1, False),
                                         Sample(10.6, True)])
    assert (report.lost, report.longest_outage) == (1, pytest.approx(0.5))


def test_no_samples_is_nothing_sent_and_nothing_lost():
    assert summarize("a -> b", "TCP", []) == PairReport("a -> b", "TCP", 0, 0, 0.0, ())


def test_the_report_totals_its_pairs_and_prints_outages_from_its_start():
    pairs = (summarize("a -> b", "TCP", samples("..x.")),
             summarize("b -> a", "ICMP", samples("....xxx.")))
    report = ProbeReport(pairs, duration=0.8, started=10.0)
    assert (report.sent, report.lost) == (12, 4)
    assert report.longest_outage == pytest.approx(0.3)
    assert report.of("b -> a", "ICMP").lost == 3
    assert report.report().splitlines() == [
        "probes over 0.8 s: sent 12, lost 4, longest outage 0.3 s",
        "  a -> b TCP: sent 4, lost 1, longest outage 0.1 s, outage at +0.2 s",
        "  b -> a ICMP: sent 8, lost 3, longest outage 0.3 s, outage at +0.4 s",
    ]


def test_late_answers_are_counted_and_printed_with_the_losses():
    pair = summarize("a -> b", "ICMP", samples("..xx."), late=1)
    assert (pair.lost, pair.late) == (2, 1)
    assert "lost 2 (1 answered late)" in pair.line()
    report = ProbeReport((pair, summarize("b -> a", "ICMP", samples("x."))), 1.0)
    assert report.late == 1 and "lost 3 (1 answered late)" in report.report()
