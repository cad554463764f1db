"""The delivery benchmark's pieces, run on a tiny size so the benchmark cannot
rot; no figure it measures is asserted on."""

from __future__ import annotations

import aiohttp
import pytest

from bench._delivery_report import percentile, print_report
from bench._hooks import Arrivals
from bench._peer import find_binaries
from bench.delivery import MEMORY, options, run


async def test_the_benchmark_runs_on_a_tiny_size_without_the_peer(capsys):
    args = options(
        ["--rounds", "1", "--notifications", "20", "--breaches", "5", "--no-peer"]
    )

    results = await run(args)

    # Throughput: one round each, every notification delivered, and the
    # baseline posted the very bodies Tocsin sent.
    assert [item.count for item in results.tocsin_runs] == [20]
    assert [item.count for item in results.bare_runs] == [20]
    assert results.same_bodies
    # Latency: every counted breach arrived once, after it was sent.
    assert len(results.tocsin.values) == 5
    assert all(value > 0 for value in results.tocsin.values)
    if MEMORY.is_dir():
        assert len(results.tocsin_memory.values) == 5
    assert results.tocsin.repeats == 0
    assert results.daemon_warnings == []
    assert (results.peers, results.peer_skipped) == ([], "--no-peer")

    assert print_report(results, args, 1.0, "2026-01-01") == 0
    report = capsys.readouterr().out
    assert "| notifications/s, SQLite outbox → local webhook, 20 queued |" in report
    assert "| breach → webhook arrival | Tocsin |" in report
    assert "not run (--no-peer)" in report
    assert "Breach → arrival p99 ≤ 20 ms through Tocsin:" in report


def test_missing_peer_binaries_are_named_with_the_install_command(tmp_path):
    found, why = find_binaries(search_path=str(tmp_path))

    assert found == {}
    assert why.startswith("prometheus, prometheus-alertmanager or alertmanager ")
    assert "apt-get install -y prometheus prometheus-alertmanager" in why


def test_peer_binaries_are_found_under_debian_or_upstream_names(tmp_path):
    for name in ("prometheus", "alertmanager"):
        binary = tmp_path / name
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)

    found, why = find_binaries(search_path=str(tmp_path))

    assert why == ""
    assert found == {
        "prometheus": str(tmp_path / "prometheus"),
        "alertmanager": str(tmp_path / "alertmanager"),
    }


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([5, 1, 3], 0.5, 3),
        (list(range(1, 101)), 0.99, 99),
        (list(range(1, 31)), 0.99, 30),
        ([7], 0.99, 7),
        ([4, 2], 1.0, 4),
    ],
)
def test_percentile_takes_the_nearest_rank(values, share, expected):
    assert percentile(values, share) == expected


async def test_the_exporter_breaches_and_alertmanager_firing_alerts_are_stamped():
    arrivals = Arrivals()
    url = await arrivals.start()
    try:
        began = arrivals.breach("m1")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/metrics") as reply:
                exposed = await reply.text()
            body = {
                "alerts": [
                    {"status": "firing", "labels": {"model": "m1"}},
                    {"status": "resolved", "labels": {"model": "m2"}},
                ]
            }
            async with session.post(f"{url}/alertmanager", json=body) as reply:
                assert reply.status == 200
            async with session.post(f"{url}/alertmanager", json=body) as reply:
                assert reply.status == 200

        assert 'breach_gauge{model="m1"} 1.0\n' in exposed
        assert await arrivals.arrival("peer", "m1", timeout=5) > began
        assert ("peer", "m2") not in arrivals.stamps
        assert arrivals.repeats == {"peer": 1}
    finally:
        await arrivals.close()
