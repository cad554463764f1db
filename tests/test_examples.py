"""Every example configuration loads, warns only as expected, and validates as
its own comment says."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tocsin import config

EXAMPLES = Path(__file__).parent.parent / "examples"
#: Placeholders that examples/demo.py fills in before the daemon reads the file.
PLACEHOLDERS = {"${RECEIVER_PORT}": "8126"}
#: Warnings an example is meant to raise, by file name; the rest raise none.
EXPECTED_WARNINGS: dict[str, list[config.ConfigWarning]] = {}
FILES = sorted(EXAMPLES.glob("*.toml"))


def test_the_examples_are_found():
    names = {path.name for path in FILES}

    assert {"demo.toml", "ml-rules.toml", "tocsin.toml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_an_example_loads_with_only_its_expected_warnings(path, tmp_path):
    text = path.read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    filled = tmp_path / path.name
    filled.write_text(text)

    loaded = config.load(filled)

    assert loaded.rules
    assert loaded.warnings() == EXPECTED_WARNINGS.get(path.name, [])


def test_the_ml_rules_example_shows_each_rule_feature():
    rules = {rule.name: rule for rule in config.load(EXAMPLES / "ml-rules.toml").rules}

    assert any(r.tumbling and r.delay and r.critical for r in rules.values())
    kinds = {r.compare.kind for r in rules.values() if r.compare is not None}
    assert kinds == {"percent", "baseline"}
    assert any(r.conditions for r in rules.values())
    assert any(r.no_data for r in rules.values())
    assert any(r.flapping for r in rules.values())
    assert any(
        r.window_cap and r.daily_cap_period == "rolling_24h" for r in rules.values()
    )


VALIDATED = [path for path in FILES if "# Validate with: tocsin " in path.read_text()]


@pytest.mark.parametrize("path", VALIDATED, ids=lambda path: path.name)
def test_an_example_validates_as_its_comment_says(path):
    [line] = [
        line
        for line in path.read_text().splitlines()
        if line.startswith("# Validate with: tocsin ")
    ]
    arguments = line.removeprefix("# Validate with: tocsin ").split()
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}

    result = subprocess.run(
        [sys.executable, "-m", "tocsin", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=EXAMPLES.parent,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
