"""Config files an operator can get wrong: one clear error, never a crash."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tocsin import config
from tocsin.errors import ConfigError


def test_a_webhook_timeout_of_zero_is_refused():
    # aiohttp reads a total timeout of 0 as "no timeout": a receiver that never
    # answers would hold the channel's deliveries for ever.
    text = (
        '[[channels]]\nname = "c"\ntype = "webhook"\nurl = "http://x"\ntimeout = "0"\n'
    )
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "t.toml")
    assert "channels[0].timeout" in str(caught.value)


def test_deeply_nested_toml_is_a_config_error():
    text = "x = " + "[" * 100_000 + "]" * 100_000 + "\n"
    with pytest.raises(ConfigError):
        config.parse(text, "t.toml")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_receive_buffer_the_kernel_cannot_take_is_one_config_line(tmp_path, command):
    path = tmp_path / "tocsin.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}/state"\n'
        '[ingest]\nudp = "127.0.0.1:0"\nreceive_buffer = 99999999999\n'
    )
    argv = [sys.executable, "-m", "tocsin", command]
    argv += [str(path)] if command == "check-config" else ["--config", str(path)]

    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)

    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "ingest.receive_buffer" in lines[0], done.stderr
    assert not (tmp_path / "state").exists()
