"""The ``tocsin`` commands over the API, against the real API on a temp socket.

The commands block; each runs on a worker thread while the test's event loop
serves the API over a fake backend.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.daemon.fake_backend import TOKEN
from tocsin.daemon import cli
from tocsin.daemon.cli_api import table


async def tocsin(served, capsys, *argv: str, where: str = "socket"):
    """Run ``tocsin argv...`` against ``served``; return (status, out, err)."""
    if where == "socket":
        argv = (*argv, "--socket", served.socket)
    status = await asyncio.to_thread(cli.main, list(argv))
    captured = capsys.readouterr()

    return status, captured.out, captured.err


async def test_alerts_are_a_table_for_people(served_api, capsys):
    status, out, err = await tocsin(served_api, capsys, "alerts")

    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "ID  STATE      SEVERITY  RULE     SERIES                    FIRED"
        "                 SUMMARY",
        "2   triggered  high      latency  model=ranker,team=search  2025-06-15"
        " 15:06:40Z  latency on {'model': 'ranker', 'team': 'search'}",
        "1   triggered  high      drift    model=fraud-a,team=ml     2025-06-15"
        " 15:06:40Z  drift on {'model': 'fraud-a', 'team': 'ml'}",
    ]


@pytest.mark.parametrize(
    ("argv", "ids"),
    [
        (["--rule", "drift"], [1]),
        (["--label", "team=search"], [2]),
        (["--state", "triggered", "--label", "team=ml"], [1]),
    ],
)
async def test_alerts_filters_and_json(served_api, capsys, argv, ids):
    status, out, _ = await tocsin(served_api, capsys, "alerts", "--json", *argv)

    assert status == 0
    assert [alert["id"] for alert in json.loads(out)] == ids


async def test_show_tells_the_alert_and_its_history(served_api, capsys):
    await tocsin(served_api, capsys, "ack", "1", "-m", "on it")
    actor = served_api.backend.history[1][-1].actor

    status, out, _ = await tocsin(served_api, capsys, "show", "uid-1")

    assert status == 0
    facts, history, escalation = out.split("\n\n")
    assert facts.splitlines()[:3] == [
        "alert     1 (uid-1)",
        "state     acknowledged",
        "rule      drift",
    ]
    assert "resolved  -" in facts.splitlines()
    width = max(len(actor), len("engine"))
    assert history.splitlines() == [
        "history",
        "TIME                  FROM       TO            "
        f"{'ACTOR'.ljust(width)}  REASON   COMMENT",
        f"2025-06-15 15:06:40Z  -          triggered     {'engine'.ljust(width)}"
        "  fired",
        "2025-06-15 15:06:40Z  triggered  acknowledged  "
        f"{actor.ljust(width)}  by hand  on it",
    ]
    assert escalation.splitlines() == [
        "escalation",
        "STEP  STATE    DUE                   CHANNELS",
        "0     reached  2025-06-15 15:06:40Z  log",
        "1     pending  2025-06-15 15:16:40Z  log",
    ]


@pytest.mark.parametrize(
    ("argv", "printed", "state"),
    [
        (["ack", "1"], "alert 1: acknowledged", "acknowledged"),
        (["escalate", "uid-1", "-m", "no answer"], "alert 1: escalated", "escalated"),
    ],
)
async def test_moves(served_api, capsys, argv, printed, state):
    status, out, _ = await tocsin(served_api, capsys, *argv)

    assert (status, out) == (0, printed + "\n")
    assert served_api.backend.alerts[1].state == state


@pytest.mark.parametrize(
    ("argv", "err"),
    [
        (
            ["investigate", "1"],
            "tocsin: refused: alert 1 is triggered: it can move to acknowledged"
            " or escalated, not investigating\n",
        ),
        (["close", "9"], "tocsin: refused: no alert 9\n"),
        (
            ["silence", "add", "team=ml", "--duration", "1h"],
            "tocsin: refused: matchers[0]: not a matcher: 'team=ml'\n",
        ),
        (
            ["silence", "add", 'team="ml"', "--until", "soon"],
            "tocsin: refused: ends_at: expected an ISO 8601 time like"
            " 2026-01-31T12:00:00Z\n",
        ),
        (["silence", "expire", "s9"], "tocsin: refused: no silence s9\n"),
    ],
)
async def test_refusals_exit_1_with_the_daemons_message(served_api, capsys, argv, err):
    assert await tocsin(served_api, capsys, *argv) == (1, "", err)


async def test_silences_are_added_listed_and_expired(served_api, capsys):
    added = await tocsin(
        served_api,
        capsys,
        *("silence", "add", 'team="ml"', 'env!="dev"', "--duration", "2h"),
        *("-m", "deploy", "--author", "alice"),
    )
    _, listed, _ = await tocsin(served_api, capsys, "silence", "list")
    expired = await tocsin(served_api, capsys, "silence", "expire", "s1")
    _, active, _ = await tocsin(
        served_api, capsys, "silence", "list", "--state", "active"
    )

    assert added == (0, "silence s1: active until 2025-06-15 17:06:40Z\n", "")
    assert listed.splitlines() == [
        "ID  STATE   STARTS                ENDS                  CREATED BY"
        "  MATCHERS              COMMENT",
        "s1  active  2025-06-15 15:06:40Z  2025-06-15 17:06:40Z  alice     "
        '  team="ml" env!="dev"  deploy',
    ]
    assert expired == (0, "silence s1: expired\n", "")
    assert active == "no silences\n"


async def test_a_silence_until_a_time(served_api, capsys):
    status, out, _ = await tocsin(
        served_api,
        capsys,
        *("silence", "add", 'team="ml"', "--until", "2025-06-16T00:00:00", "--json"),
    )

    assert status == 0
    assert json.loads(out)["ends_at"] == 1_750_032_000.0


async def test_status(served_api, capsys):
    served_api.clock.advance(30)

    status, out, _ = await tocsin(served_api, capsys, "status")

    assert status == 0
    assert out.splitlines()[1:] == [
        "config                 /etc/tocsin/tocsin.toml",
        "started                2025-06-15 15:05:10Z",
        "uptime                 120s",
        "alerts                 2 triggered",
        "silences               0 active",
        "rules                  0 api, 1 config",
        "channels               0 api, 1 config",
        "pending notifications  3",
        "state database         0 transactions, 0 errors (0 locked), 0 slow",
    ]


async def test_the_socket_is_found_from_the_config(served_api, capsys, tmp_path):
    config = tmp_path / "tocsin.toml"
    config.write_text(f'[api]\nsocket = "{served_api.socket}"\n')

    status, out, _ = await tocsin(
        served_api, capsys, "alerts", "-c", str(config), "--json", where="config"
    )

    assert status == 0
    assert len(json.loads(out)) == 2


@pytest.mark.parametrize("over", ["socket", "tcp"])
async def test_the_daemon_is_found_from_the_environment(
    served_api, capsys, monkeypatch, over
):
    address = served_api.socket if over == "socket" else served_api.url
    monkeypatch.setenv("TOCSIN_API", address)
    monkeypatch.setenv("TOCSIN_TOKEN", TOKEN)

    status, out, _ = await tocsin(
        served_api, capsys, "alerts", "--json", where="environment"
    )

    assert status == 0
    assert len(json.loads(out)) == 2


async def test_a_wrong_token_is_refused(served_api, capsys, monkeypatch):
    monkeypatch.setenv("TOCSIN_API", served_api.url)
    monkeypatch.setenv("TOCSIN_TOKEN", "wrong")

    assert await tocsin(served_api, capsys, "status", where="environment") == (
        1,
        "",
        "tocsin: refused: a valid bearer token is required\n",
    )


async def test_an_unreachable_daemon_exits_2(served_api, capsys, tmp_path):
    missing = str(tmp_path / "gone.sock")

    status, out, err = await tocsin(
        served_api, capsys, "alerts", "--socket", missing, where="given"
    )

    assert (status, out) == (2, "")
    assert err.startswith(f"tocsin: cannot reach the daemon at {missing}: ")


def test_no_address_at_all_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("TOCSIN_API", raising=False)

    status = cli.main(["status"])

    assert status == 2
    assert "give -c tocsin.toml, --socket or $TOCSIN_API" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], ["A  LONGER"]),
        ([("wide cell", "x")], ["A          LONGER", "wide cell  x"]),
        ([("", "")], ["A  LONGER", ""]),
    ],
)
def test_tables_align_columns_and_end_lines_without_spaces(rows, expected):
    assert table(("A", "LONGER"), rows).split("\n") == expected
