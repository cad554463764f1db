"""The config file: what loads, and the exact error line for what does not."""

import os
import subprocess
import sys

import pytest

from tocsin import config
from tocsin.errors import ConfigError

GOOD = """
[daemon]
state_dir = "/tmp/tocsin-test"
tick = "500ms"

[ingest]
udp = "127.0.0.1:8125"
unix_dgram = "/tmp/tocsin-test/dsd.sock"

[export.datadog]
interval = "10s"
metric_prefix = "ml."
tags = ["env:prod"]

[[channels]]
name = "ops"
type = "webhook"
url_env = "OPS_WEBHOOK_URL"

[[channels]]
name = "log"
type = "log"

[[rules]]
name = "fraud-drift"
metric = "model.drift.psi"
match = { model = "fraud_v3" }
group_by = ["model"]
aggregation = "p95"
window = "5m"
op = ">="
threshold = 0.2
for = "30s"
severity = "critical"
channels = ["ops", "log"]
cooldown = "1h"
daily_cap = 10
"""


def test_a_full_config_loads_with_durations_in_seconds():
    loaded = config.parse(GOOD, "good.toml")

    rule = loaded.rules[0]
    assert rule.window == 300.0
    assert rule.for_ == 30.0
    assert rule.cooldown == 3600.0
    assert rule.match == {"model": "fraud_v3"}
    assert loaded.daemon.tick == 0.5
    assert loaded.export.datadog.interval == 10.0
    assert [channel.name for channel in loaded.channels] == ["ops", "log"]
    assert str(loaded.database_path) == "/tmp/tocsin-test/tocsin.db"


def test_an_empty_file_is_a_valid_config_with_defaults():
    loaded = config.parse("", "empty.toml")

    assert loaded.ingest.udp == "127.0.0.1:8125"
    assert loaded.export.datadog.interval == 60.0
    assert loaded.rules == []


RULE = '[[rules]]\nname = "r"\nmetric = "m"\nthreshold = 1\n'
RANGE_RULE = '[[rules]]\nname = "r"\nmetric = "m"\nop = "outside"\nrange = [0.1, 0.9]\n'
CHANNEL = '[[channels]]\nname = "c"\ntype = "webhook"\nurl = "http://x"\n'
DATADOG = "[export.datadog]\n"
BASE_URL = (
    "bad.toml: export.datadog.base_url: expected an http(s) URL with a host, "
    "like https://api.datadoghq.eu, got "
)
SITE = (
    "bad.toml: export.datadog.site: expected a host name like datadoghq.eu "
    "(no scheme, no path), got "
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            RULE + RULE.replace('"r"', '"s"') + 'window = "5x"\n',
            "bad.toml: rules[1].window: invalid duration '5x' "
            "(write it like 30s, 5m, 1h or 1d)",
        ),
        (
            RULE + "window = 5\n",
            "bad.toml: rules[0].window: "
            "expected a duration string like '30s', '5m' or '1h'",
        ),
        ("[daemon]\nstate_dri = 'x'\n", "bad.toml: daemon.state_dri: unknown key"),
        (RULE + "colour = 'red'\n", "bad.toml: rules[0].colour: unknown key"),
        (
            '[[rules]]\nname = "r"\nmetric = "m"\n',
            "bad.toml: rules[0].threshold: missing required key",
        ),
        (
            RULE + 'op = "=>"\n',
            "bad.toml: rules[0].op: Invalid enum value '=>'; expected one of '!=',"
            " '<', '<=', '==', '>', '>=', 'inside', 'outside'",
        ),
        (
            RULE + 'severity = "urgent"\n',
            "bad.toml: rules[0].severity: Invalid enum value 'urgent'; expected one"
            " of 'critical', 'high', 'info', 'low', 'medium', 'warning'",
        ),
        (
            RULE + 'channels = ["pager"]\n',
            "bad.toml: rules[0].channels[0]: no channel named 'pager'",
        ),
        (
            RULE + RULE,
            "bad.toml: rules[1].name: duplicate rule name 'r'",
        ),
        (
            '[[channels]]\nname = "x"\ntype = "carrier-pigeon"\n',
            "bad.toml: channels[0].type: unknown channel type "
            "('carrier-pigeon'); known: datadog, email, log, pagerduty, slack, teams,"
            " webhook",
        ),
        (
            '[[channels]]\nname = "x"\ntype = "webhook"\n',
            "bad.toml: channels[0].url: set exactly one of url, url_env, url_file",
        ),
        (
            '[export.datadog]\ninterval = "500ms"\n',
            "bad.toml: export.datadog.interval: must be at least 1s",
        ),
        (
            RULE + 'threshold = "high"\n',
            "bad.toml: not valid TOML: Cannot overwrite a value (at line 5, column 19)",
        ),
        ('[daemon]\ntick = "5ms"\n', "bad.toml: daemon.tick: must be at least 10ms"),
        (
            '[ingest]\nunix_dgram = "/run/t.sock"\nunix_stream = "/run/t.sock"\n',
            "bad.toml: ingest.unix_stream: must not be the path of unix_dgram",
        ),
        (
            "[ingest]\nreceive_buffer = 99999999999\n",
            "bad.toml: ingest.receive_buffer: Expected `int` <= 1073741824",
        ),
        (
            CHANNEL + 'backoff = "0"\n',
            "bad.toml: channels[0].backoff: must be longer than 0s",
        ),
        (
            CHANNEL + 'backoff = "10s"\nmax_backoff = "5s"\n',
            "bad.toml: channels[0].max_backoff: must not be shorter than backoff",
        ),
        (
            CHANNEL + 'timeout = "0s"\n',
            "bad.toml: channels[0].timeout: must be longer than 0s",
        ),
        (
            '[ingest]\nidle_timeout = "0s"\n',
            "bad.toml: ingest.idle_timeout: must be longer than 0s",
        ),
        (
            '[ingest]\nudp = "localhost"\n',
            "bad.toml: ingest.udp: expected host:port, got 'localhost'",
        ),
        (
            '[ingest]\nudp = "127.0.0.1:²"\n',
            "bad.toml: ingest.udp: expected host:port, got '127.0.0.1:²'",
        ),
        (RULE + 'window = "0s"\n', "bad.toml: rules[0].window: must be longer than 0s"),
        (
            '[[channels]]\nname = "c"\ntype = "log"\nbackoff = "99999d"\n',
            "bad.toml: channels[0].backoff: duration '99999d' is longer than 3650d",
        ),
        (
            RANGE_RULE.replace("range", "#"),
            "bad.toml: rules[0].range: expected [low, high]",
        ),
        (
            RANGE_RULE.replace("[0.1, 0.9]", "[0.9, 0.1]"),
            "bad.toml: rules[0].range: expected finite numbers, low <= high",
        ),
        (
            RANGE_RULE + "threshold = 1\n",
            "bad.toml: rules[0]: op 'outside' takes a range, not a threshold",
        ),
        (
            RANGE_RULE + "recover = 0.5\n",
            "bad.toml: rules[0].recover: a range has no recovery threshold",
        ),
        (RULE + "range = [1, 2]\n", "bad.toml: rules[0].range: op '>' takes no range"),
        (
            RULE + "recover = 2\n",
            "bad.toml: rules[0].recover: must be at or below the threshold",
        ),
        (
            RULE + 'op = "<"\nrecover = 0.5\n',
            "bad.toml: rules[0].recover: must be at or above the threshold",
        ),
        (
            RULE + 'op = "=="\nrecover = 1\n',
            "bad.toml: rules[0].recover: op '==' has no recovery threshold",
        ),
        (
            RULE + "recover = nan\n",
            "bad.toml: rules[0].recover: must be a finite number",
        ),
        (
            RULE + 'summary = "Drift on {{ labels.modle }}"\n',
            "bad.toml: rules[0].summary: 'dict object' has no attribute 'modle'",
        ),
        (
            RULE + 'description = "{{ value | round(2) "\n',
            "bad.toml: rules[0].description: unexpected end of template, "
            "expected 'end of print statement'.",
        ),
        (
            RULE + 'summary = "{% for x in y %}"\n',
            "bad.toml: rules[0].summary: Unexpected end of template. Jinja was "
            "looking for the following tags: 'endfor' or 'else'. The innermost "
            "block that needs to be closed is 'for'.",
        ),
        (
            "[daemon\n",
            "bad.toml: not valid TOML: "
            "Expected ']' at the end of a table declaration (at line 1, column 8)",
        ),
        (
            DATADOG + 'base_url = "api.datadoghq.eu"\n',
            BASE_URL + "'api.datadoghq.eu'",
        ),
        (
            DATADOG + 'base_url = "ftp://api.datadoghq.eu"\n',
            BASE_URL + "'ftp://api.datadoghq.eu'",
        ),
        (
            DATADOG + 'base_url = "https://"\n',
            BASE_URL + "'https://'",
        ),
        (
            DATADOG + 'base_url = "https://:8080/"\n',
            BASE_URL + "'https://:8080/'",
        ),
        (
            DATADOG + 'base_url = "https://intake:99999"\n',
            BASE_URL + "'https://intake:99999'",
        ),
        (
            DATADOG + 'base_url = "https://api.datadoghq.eu\\n"\n',
            BASE_URL + "'https://api.datadoghq.eu\\n'",
        ),
        (
            DATADOG + 'base_url = "https://proxy.example/dd?"\n',
            "bad.toml: export.datadog.base_url: must not have a query or a fragment:"
            " the API path is appended to it",
        ),
        (
            DATADOG + 'site = "https://datadoghq.eu"\n',
            SITE + "'https://datadoghq.eu'",
        ),
        (
            DATADOG + 'site = "datadoghq.eu/"\n',
            SITE + "'datadoghq.eu/'",
        ),
        (DATADOG + 'site = ""\n', SITE + "''"),
        (
            DATADOG + 'site = "datadoghq..eu"\n',
            SITE + "'datadoghq..eu'",
        ),
        (
            RULE + 'match = { env = "prod", model = 3 }\n',
            "bad.toml: rules[0].match.model: Expected `str`, got `int`",
        ),
        (
            RULE + RULE.replace('"r"', '"s"') + "labels = { team = true }\n",
            "bad.toml: rules[1].labels.team: Expected `str`, got `bool`",
        ),
        (
            RULE + 'metadata = { "dashboard.url" = ["a"] }\n',
            'bad.toml: rules[0].metadata."dashboard.url": Expected `str`, got `array`',
        ),
        (
            RULE + 'labels = { "team\\n" = 1 }\n',
            'bad.toml: rules[0].labels."team\\n": Expected `str`, got `int`',
        ),
        (
            '[[channels]]\nname = "log"\ntype = "log"\n'
            + CHANNEL
            + "headers = { X-Team = 7 }\n",
            "bad.toml: channels[1].headers.X-Team: Expected `str`, got `int`",
        ),
        ('[daemon]\n"state dir" = "x"\n', 'bad.toml: daemon."state dir": unknown key'),
        (
            CHANNEL + 'headers = { Content-Length = "3" }\n',
            "bad.toml: channels[0].headers.Content-Length: Content-Length is set by"
            " Tocsin for every request and cannot be configured",
        ),
        (
            CHANNEL + 'headers = { transfer-encoding = "chunked" }\n',
            "bad.toml: channels[0].headers.transfer-encoding: transfer-encoding is"
            " set by Tocsin for every request and cannot be configured",
        ),
        (
            CHANNEL + 'headers = { Idempotency-Key = "x" }\n',
            "bad.toml: channels[0].headers.Idempotency-Key: Idempotency-Key is set"
            " by Tocsin for every request and cannot be configured",
        ),
        (
            CHANNEL + 'headers = { Authorization = "Bearer s3cret\\r\\nX-Evil: 1" }\n',
            "bad.toml: channels[0].headers.Authorization:"
            " the value holds a line break or another control character",
        ),
        (
            CHANNEL + 'headers = { X-Token = "s3cret\\u0000" }\n',
            "bad.toml: channels[0].headers.X-Token:"
            " the value holds a line break or another control character",
        ),
        (
            CHANNEL + 'headers = { "X-Team Name" = "ml" }\n',
            'bad.toml: channels[0].headers."X-Team Name": not a valid header name'
            " (letters, digits and !#$%&'*+-.^_`|~ only)",
        ),
        (
            CHANNEL + 'headers = { "X-Team:" = "ml" }\n',
            'bad.toml: channels[0].headers."X-Team:": not a valid header name'
            " (letters, digits and !#$%&'*+-.^_`|~ only)",
        ),
        (
            CHANNEL + 'headers = { "X-Team\\r\\n" = "ml" }\n',
            'bad.toml: channels[0].headers."X-Team\\r\\n": not a valid header name'
            " (letters, digits and !#$%&'*+-.^_`|~ only)",
        ),
        (
            CHANNEL + 'headers = { "" = "ml" }\n',
            'bad.toml: channels[0].headers."": not a valid header name'
            " (letters, digits and !#$%&'*+-.^_`|~ only)",
        ),
        (
            DATADOG + 'api_key_env = "DD_API_KEY"\napi_key_file = "datadog-api-key"\n',
            "bad.toml: export.datadog: set one of api_key_env and api_key_file,"
            " not both",
        ),
        (
            DATADOG + 'metric_prefix = "1bad prefix"\n',
            "bad.toml: export.datadog.metric_prefix: must start with an ASCII"
            " letter, as every Datadog metric name does; got '1bad prefix'",
        ),
        (
            DATADOG + 'metric_prefix = "_ml."\n',
            "bad.toml: export.datadog.metric_prefix: must start with an ASCII"
            " letter, as every Datadog metric name does; got '_ml.'",
        ),
        (
            DATADOG + 'metric_prefix = "модель."\n',
            "bad.toml: export.datadog.metric_prefix: must start with an ASCII"
            " letter, as every Datadog metric name does; got 'модель.'",
        ),
        (
            DATADOG + f'metric_prefix = "{"m" * 200}"\n',
            "bad.toml: export.datadog.metric_prefix: must be shorter than 200"
            " characters, Datadog's limit for a whole metric name",
        ),
        (
            '[api]\ntcp = "127.0.0.1:9094"\n',
            "bad.toml: api: with tcp set, set exactly one of token_env and token_file",
        ),
        (
            '[api]\ntcp = "127.0.0.1:9094"\ntoken_env = "T"\ntoken_file = "t"\n',
            "bad.toml: api: with tcp set, set exactly one of token_env and token_file",
        ),
        (
            '[api]\ntcp = "9094"\ntoken_env = "T"\n',
            "bad.toml: api.tcp: expected host:port, got '9094'",
        ),
        (
            '[api]\ntcp = "localhost:70000"\ntoken_env = "T"\n',
            "bad.toml: api.tcp: no such port: 70000",
        ),
        (
            '[audit]\nretention = "forever"\n',
            "bad.toml: audit.retention: invalid duration 'forever'"
            " (write it like 30s, 5m, 1h or 1d)",
        ),
        (
            "[audit]\nrecord_payloads = 1\n",
            "bad.toml: audit.record_payloads: Expected `bool`, got `int`",
        ),
        ("[audit]\nkeep = true\n", "bad.toml: audit.keep: unknown key"),
    ],
)
def test_a_bad_config_is_one_line_naming_file_and_key(text, expected):
    with pytest.raises(ConfigError) as raised:
        config.parse(text, "bad.toml")

    assert str(raised.value) == expected
    assert "\n" not in str(raised.value)


def test_header_values_are_never_quoted_in_errors():
    text = CHANNEL + 'headers = { Authorization = "Bearer s3cret\\n" }\n'

    with pytest.raises(ConfigError) as raised:
        config.parse(text, "bad.toml")

    assert "s3cret" not in str(raised.value)


def test_header_values_with_tabs_and_non_ascii_text_load():
    text = CHANNEL + 'headers = { X-Team = "ml\\tplatform", X-Owner = "Zoë" }\n'

    assert config.parse(text, "good.toml").channels[0].headers == {
        "X-Team": "ml\tplatform",
        "X-Owner": "Zoë",
    }


@pytest.mark.parametrize(
    "line",
    [
        'site = "us5.datadoghq.com"',
        # A site outside Datadog's published list is still a host name.
        'site = "datadoghq.example-site.com"',
        'base_url = "https://api.datadoghq.eu"',
        'base_url = "http://127.0.0.1:8126/"',
        'base_url = "http://[::1]:8126/intake"',
        # Characters Datadog does not take become "_", as in exported names.
        'metric_prefix = "ml platform."',
        f'metric_prefix = "{"m" * 199}"',
    ],
)
def test_datadog_export_settings_that_load(line):
    config.parse(DATADOG + line + "\n", "good.toml")


def test_a_udp_host_that_does_not_resolve_is_a_config_error():
    # The reason after the host is the resolver's own words, which vary by libc.
    with pytest.raises(ConfigError) as raised:
        config.parse('[ingest]\nudp = "nosuchhost.invalid:8125"\n', "bad.toml")

    prefix = "bad.toml: ingest.udp: cannot resolve host 'nosuchhost.invalid': "
    assert str(raised.value).startswith(prefix)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("token", ['token_env = "TOCSIN_TOKEN"', 'token_file = "t"'])
def test_a_tcp_api_with_one_token_source_loads(token):
    text = f'[api]\ntcp = "127.0.0.1:9094"\n{token}\n'

    assert config.parse(text, "good.toml").api.tcp == "127.0.0.1:9094"


@pytest.mark.parametrize("udp", ["localhost:8125", "[::1]:8125", ":8125", ""])
def test_udp_addresses_that_load(udp):
    assert config.parse(f'[ingest]\nudp = "{udp}"\n', "good.toml").ingest.udp == udp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        (
            '[[channels]]\nname = "log"\ntype = "log"\n'
            + RULE.replace('"r"', '"told"')
            + 'channels = ["log"]\n'
            + RULE.replace('"r"', '"kept"')
            + "channels = []\n"
            + RULE.replace('"r"', '"silent"'),
            [
                config.ConfigWarning(
                    "rules[1].channels",
                    "no channels: alerts of rule 'kept' are recorded"
                    " but nobody is notified",
                ),
                config.ConfigWarning(
                    "rules[2].channels",
                    "no channels: alerts of rule 'silent' are recorded"
                    " but nobody is notified",
                ),
            ],
        ),
    ],
)
def test_warnings_name_each_rule_that_notifies_nobody(text, expected):
    assert config.parse(text, "good.toml").warnings() == expected


def test_a_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError) as raised:
        config.load(missing)

    assert str(raised.value).startswith(f"{missing}: cannot read the file")


def test_check_config_command_exits_non_zero_and_touches_nothing(tmp_path):
    state = tmp_path / "state"
    path = tmp_path / "tocsin.toml"
    path.write_text(f'[daemon]\nstate_dir = "{state}"\n' + RULE + 'window = "5x"\n')

    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = subprocess.run(
            [sys.executable, "-m", "tocsin", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert f"{path}: rules[0].window: invalid duration '5x'" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not state.exists()


def check_config(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tocsin", "check-config", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_check_config_command_accepts_a_good_file(tmp_path):
    path = tmp_path / "tocsin.toml"
    path.write_text(GOOD)
    env = {**os.environ, "OPS_WEBHOOK_URL": "https://hooks.example/ops"}

    result = check_config(str(path), env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok (1 rule, 2 channels)"


def test_check_config_warns_on_stderr_and_still_accepts(tmp_path):
    path = tmp_path / "tocsin.toml"
    path.write_text(RULE)

    result = check_config(str(path), env=dict(os.environ))

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"tocsin: config warning: {path}: rules[0].channels: no channels:"
        " alerts of rule 'r' are recorded but nobody is notified"
    ]
    assert result.stdout.strip() == f"{path}: ok (1 rule, 0 channels)"


def test_check_config_reads_the_secrets_as_run_does(tmp_path):
    path = tmp_path / "tocsin.toml"
    path.write_text(GOOD)
    env = {key: value for key, value in os.environ.items() if key != "OPS_WEBHOOK_URL"}

    missing = check_config(str(path), env=env)
    skipped = check_config("--skip-secrets", str(path), env=env)

    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"tocsin: config error: {path}: channels[0].url_env: no webhook URL of"
        " channel ops:"
        " 'OPS_WEBHOOK_URL' is empty or not set"
    )
    assert skipped.returncode == 0, skipped.stderr


def test_the_annotated_example_config_is_valid():
    loaded = config.load("examples/tocsin.toml")

    assert [rule.name for rule in loaded.rules] == [
        "prediction-drift",
        "prediction-latency",
        "prediction-errors",
    ]
