"""The systemd units in systemd/: valid, hardened, and in step with the
example config."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tocsin import config
from tocsin.daemon.systemd import LISTENER_OF
from tocsin.errors import ConfigError
from tocsin.secrets import read_secrets

UNITS = Path(__file__).parent.parent / "systemd"
EXAMPLE = Path(__file__).parent.parent / "examples" / "tocsin.toml"
ANALYZE = shutil.which("systemd-analyze")
#: Highest overall exposure ``systemd-analyze security`` may give the service.
MOST_EXPOSURE = 2.5

needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is missing (Debian's systemd package has it)",
)


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Return each section's settings, every value of a repeated key kept."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key, []).append(value)
    return sections


def socket_units() -> dict[str, dict[str, list[str]]]:
    """Each socket unit's [Socket] section, by its FileDescriptorName=."""
    units = [read_unit(path)["Socket"] for path in UNITS.glob("*.socket")]
    return {unit["FileDescriptorName"][0]: unit for unit in units}


@pytest.fixture
def installed(tmp_path) -> Path:
    """The units, with ExecStart= naming this environment's tocsin: verify
    checks that the program exists."""
    tocsin = Path(sys.executable).parent / "tocsin"
    if not tocsin.exists():
        pytest.skip(f"{tocsin} is missing: install Tocsin in the environment")
    for path in UNITS.iterdir():
        text = path.read_text().replace("/usr/local/bin/tocsin", str(tocsin))
        (tmp_path / path.name).write_text(text)
    return tmp_path


def test_every_listener_has_a_socket_unit_the_service_takes():
    service = read_unit(UNITS / "tocsin.service")
    names = {path.name for path in UNITS.glob("*.socket")}

    assert set(socket_units()) == set(LISTENER_OF)
    assert set(service["Service"]["Sockets"][0].split()) == names
    assert set(service["Unit"]["Requires"][0].split()) == names
    for unit in socket_units().values():
        assert unit["Service"] == ["tocsin.service"]


def test_the_socket_units_listen_where_the_example_config_says():
    example = config.load(EXAMPLE)
    wanted = {
        "dogstatsd-udp": ("ListenDatagram", example.ingest.udp),
        "dogstatsd": ("ListenDatagram", example.ingest.unix_dgram),
        "ingest": ("ListenStream", example.ingest.unix_stream),
        "api": ("ListenStream", example.api_socket_path),
    }

    found = {
        name: next((key, values[0]) for key, values in unit.items() if "Listen" in key)
        for name, unit in socket_units().items()
    }

    assert found == wanted


def test_the_service_notifies_and_reloads_through_the_api_socket():
    service = read_unit(UNITS / "tocsin.service")["Service"]
    api = socket_units()["api"]["ListenStream"][0]

    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["30s"]
    assert service["ExecReload"] == [f"+/usr/local/bin/tocsin reload --socket {api}"]


@needs_analyze
def test_the_units_verify(installed):
    units = sorted(str(path) for path in installed.iterdir())

    verified = subprocess.run(
        [ANALYZE, "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        check=False,
        cwd=installed,
    )

    assert (verified.returncode, verified.stderr) == (0, "")


@needs_analyze
def test_the_service_is_hardened(installed):
    analyzed = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(installed / "tocsin.service")],
        capture_output=True,
        text=True,
        check=False,
        cwd=installed,
    )

    found = re.search(
        r"Overall exposure level for tocsin\.service: ([\d.]+)", analyzed.stdout
    )
    assert found is not None, analyzed.stdout + analyzed.stderr
    assert float(found.group(1)) <= MOST_EXPOSURE


def test_the_example_config_reads_every_secret_from_the_units_credentials(
    tmp_path, monkeypatch
):
    service = read_unit(UNITS / "tocsin.service")["Service"]
    names = [value.split(":")[0] for value in service["LoadCredential"]]
    # What systemd would put in $CREDENTIALS_DIRECTORY.
    for name in names:
        secret = "https://hooks.example/x" if name.endswith("-url") else "k" * 32
        (tmp_path / name).write_text(secret + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    secrets = read_secrets(config.load(EXAMPLE), str(EXAMPLE))

    assert secrets.datadog_api_key == "k" * 32
    # Each credential is read, by one key of the config.
    read = sum(len(channel) for channel in secrets.channels.values())
    assert read + 1 == len(names)
    (tmp_path / names[-1]).unlink()
    with pytest.raises(ConfigError, match=names[-1]):
        read_secrets(config.load(EXAMPLE), str(EXAMPLE))
