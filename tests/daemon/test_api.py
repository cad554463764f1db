"""The control API over a real Unix socket, and ``tocsin reload`` against it."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat

import aiohttp
import pytest

from tocsin.daemon import api, cli
from tocsin.daemon.reload import ReloadOutcome

RELOADED = ReloadOutcome(
    kept=("a",), added=("b",), removed=("c", "d"), config="/etc/tocsin/tocsin.toml"
)
NOT_ALLOWED = {"status": "error", "error": "Method Not Allowed"}
REFUSED = ReloadOutcome(error="/etc/tocsin.toml: rules[0].window: invalid duration")


class FakeDaemon:
    """Answers reloads with the outcomes it is given, and records their source."""

    def __init__(self) -> None:
        self.outcome = RELOADED
        self.sources: list[str] = []
        self.is_ready = True

    async def reload(self, source: str) -> ReloadOutcome:
        self.sources.append(source)
        return self.outcome


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
async def served(tmp_path, daemon):
    path = str(tmp_path / "run" / "api.sock")
    # Looked up per request, so that a test may replace it.
    control = api.ControlApi(
        lambda source: daemon.reload(source), lambda: daemon.is_ready
    )
    await control.start(api.bind(path))
    yield path
    await control.stop()


async def request(path: str, method: str, url: str) -> tuple[int, object]:
    connector = aiohttp.UnixConnector(path=path)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, "http://tocsin" + url) as response,
    ):
        if response.content_type != "application/json":
            return response.status, None
        return response.status, await response.json()


async def test_a_reload_answers_what_became_of_each_rule(served, daemon):
    status, body = await request(served, "POST", "/-/reload")

    assert (status, body) == (
        200,
        {
            "status": "reloaded",
            "config": "/etc/tocsin/tocsin.toml",
            "kept": ["a"],
            "added": ["b"],
            "changed": [],
            "removed": ["c", "d"],
        },
    )
    assert daemon.sources == ["api"]


async def test_a_refused_reload_answers_400_with_the_error(served, daemon):
    daemon.outcome = REFUSED

    status, body = await request(served, "POST", "/-/reload")

    assert (status, body) == (400, {"status": "error", "error": REFUSED.error})


async def test_a_reload_that_fails_inside_answers_500(served, daemon, caplog):
    async def broken(source: str) -> ReloadOutcome:
        raise RuntimeError("a fault")

    daemon.reload = broken

    status, body = await request(served, "POST", "/-/reload")

    assert (status, body) == (
        500,
        {"status": "error", "error": "internal error; see tocsin's log"},
    )
    [record] = [r for r in caplog.records if r.message == "config reload failed"]
    assert record.exc_info is not None


@pytest.mark.parametrize(
    ("method", "url", "is_ready", "status", "body"),
    [
        ("GET", "/-/healthy", True, 200, {"status": "ok"}),
        ("GET", "/-/healthy", False, 200, {"status": "ok"}),
        ("GET", "/-/ready", True, 200, {"status": "ready"}),
        ("GET", "/-/ready", False, 503, {"status": "not ready"}),
        ("GET", "/-/reload", True, 405, NOT_ALLOWED),
        ("POST", "/-/healthy", True, 405, NOT_ALLOWED),
        ("GET", "/metrics", True, 404, {"status": "error", "error": "Not Found"}),
    ],
)
async def test_endpoints(served, daemon, method, url, is_ready, status, body):
    daemon.is_ready = is_ready

    assert await request(served, method, url) == (status, body)
    assert daemon.sources == []


async def test_only_the_owner_and_group_may_use_the_socket(served):
    assert stat.S_IMODE(os.stat(served).st_mode) == 0o660


async def test_stop_removes_the_socket_file_and_is_safe_twice(tmp_path, daemon):
    path = str(tmp_path / "api.sock")
    control = api.ControlApi(daemon.reload, lambda: True)
    await control.start(api.bind(path))

    await control.stop()
    await control.stop()

    assert not os.path.exists(path)


async def test_a_stale_socket_file_is_replaced(tmp_path, daemon):
    path = str(tmp_path / "api.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(path)
    control = api.ControlApi(daemon.reload, lambda: True)
    await control.start(api.bind(path))

    assert (await request(path, "GET", "/-/healthy"))[0] == 200
    await control.stop()


def test_a_socket_another_process_serves_is_not_taken(tmp_path):
    path = str(tmp_path / "api.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(path)
        live.listen()

        with pytest.raises(OSError) as raised:
            api.bind(path)

    assert raised.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("spelling", ["{dir}/ingest.sock", "{dir}/./ingest.sock"])
def test_the_path_of_an_ingest_socket_is_refused(tmp_path, spelling):
    taken = str(tmp_path / "ingest.sock")

    with pytest.raises(ValueError, match="the path of an ingest listener"):
        api.bind(spelling.format(dir=tmp_path), taken=("", taken))


# ``tocsin reload`` runs its own event loop, so it runs in a thread here.


async def reload_command(*arguments: str) -> int:
    return await asyncio.to_thread(cli.main, ["reload", *arguments])


async def test_the_command_prints_the_file_the_daemon_reloaded(
    served, tmp_path, capsys
):
    # Another file that names the same socket: the daemon still reads its own.
    config = tmp_path / "other.toml"
    config.write_text(f'[api]\nsocket = "{served}"\n')

    assert await reload_command("--config", str(config)) == 0

    out, err = capsys.readouterr()
    assert out == (
        "/etc/tocsin/tocsin.toml: reloaded"
        " (1 kept, 1 added: b, 0 changed, 2 removed: c, d)\n"
    )
    assert err == ""


async def test_the_command_finds_the_daemon_from_tocsin_api(
    served, monkeypatch, capsys
):
    monkeypatch.setenv("TOCSIN_API", served)

    assert await reload_command() == 0

    out, _ = capsys.readouterr()
    assert out.startswith("/etc/tocsin/tocsin.toml: reloaded (")


async def test_the_command_without_a_way_to_the_daemon_says_how_to_give_one(
    monkeypatch, capsys
):
    monkeypatch.delenv("TOCSIN_API", raising=False)

    assert await reload_command() == 2

    _, err = capsys.readouterr()
    assert "give -c tocsin.toml, --socket, or set $TOCSIN_API" in err


async def test_the_command_exits_1_with_the_error_of_a_refused_file(
    served, daemon, capsys
):
    daemon.outcome = REFUSED

    assert await reload_command("--config", "unused.toml", "--socket", served) == 1

    out, err = capsys.readouterr()
    assert (out, err) == ("", f"tocsin: reload refused: {REFUSED.error}\n")


async def test_the_command_exits_2_when_nobody_listens(tmp_path, capsys):
    path = tmp_path / "state" / "api.sock"
    config = tmp_path / "tocsin.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')

    assert await reload_command("--config", str(config)) == 2

    _, err = capsys.readouterr()
    assert err == (
        f"tocsin: cannot reach the daemon at {path}: No such file or directory\n"
    )


async def test_the_command_exits_2_on_a_socket_nobody_serves(tmp_path, capsys):
    path = str(tmp_path / "api.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(path)

    assert await reload_command("--config", "unused.toml", "--socket", path) == 2

    _, err = capsys.readouterr()
    assert err == f"tocsin: cannot reach the daemon at {path}: Connection refused\n"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("", "./tocsin-state/api.sock"),
        ('[daemon]\nstate_dir = "/var/lib/tocsin"\n', "/var/lib/tocsin/api.sock"),
        ('[api]\nsocket = "/run/tocsin/api.sock"\n', "/run/tocsin/api.sock"),
        ('[api]\nsocket = ""\n[daemon]\nstate_dir = "s"\n', "s/api.sock"),
        ("[api]\nenabled = false\n", None),
        # Wrong types are the daemon's to report; the socket is still found.
        ("api = 3\ndaemon = 4\n", "./tocsin-state/api.sock"),
        ("[daemon]\nstate_dir = 5\n[rules]\nnonsense = 1\n", "./tocsin-state/api.sock"),
    ],
)
def test_where_the_command_finds_the_socket(tmp_path, text, found):
    config = tmp_path / "tocsin.toml"
    config.write_text(text)

    assert cli._api_socket(str(config)) == (
        found if found is None else str(type(tmp_path)(found))
    )


def test_the_command_refuses_a_file_that_is_not_toml(tmp_path, capsys):
    config = tmp_path / "tocsin.toml"
    config.write_text("[api\n")

    assert cli.main(["reload", "--config", str(config)]) == 1

    _, err = capsys.readouterr()
    assert err.startswith(f"tocsin: config error: {config}: not valid TOML: ")


def test_the_command_says_when_the_api_is_off(tmp_path, capsys):
    config = tmp_path / "tocsin.toml"
    config.write_text("[api]\nenabled = false\n")

    assert cli.main(["reload", "--config", str(config)]) == 2

    _, err = capsys.readouterr()
    assert "api.enabled is false" in err
    assert "SIGHUP" in err
