"""Secrets: where they are read from, and errors that name the key, not the secret."""

from __future__ import annotations

import pytest

from tocsin import config
from tocsin.errors import ConfigError
from tocsin.secrets import read_secrets

HOOK = '[[channels]]\nname = "ops"\ntype = "webhook"\n'


def load(text: str) -> config.Config:
    return config.parse(text, "tocsin.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "default-env-key"),
        # A source the file names wins over the default $DD_API_KEY.
        ('api_key_file = "dd.key"\n', "file-key"),
        ('api_key_env = "TOCSIN_TEST_DD"\n', "named-env-key"),
        ('api_key_env = ""\napi_key_file = "dd.key"\n', "file-key"),
        ('api_key_env = ""\n', None),
    ],
)
def test_the_api_key_comes_from_the_one_source_configured(
    text, expected, monkeypatch, tmp_path
):
    (tmp_path / "dd.key").write_text("file-key\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("DD_API_KEY", "default-env-key")
    monkeypatch.setenv("TOCSIN_TEST_DD", "named-env-key")
    loaded = load("[export.datadog]\n" + text)

    assert read_secrets(loaded, "tocsin.toml").datadog_api_key == expected


def test_white_space_around_a_secret_is_dropped(monkeypatch, tmp_path):
    # As an env file with CRLF line ends leaves it.
    monkeypatch.setenv("TOCSIN_TEST_DD", " crlf-key\r")
    loaded = load('[export.datadog]\napi_key_env = "TOCSIN_TEST_DD"\n')

    assert read_secrets(loaded, "tocsin.toml").datadog_api_key == "crlf-key"


@pytest.mark.parametrize("secret", ["bad\rkey", "bad\x01key", "bad\x7fkey"])
def test_a_secret_with_a_control_character_is_refused_unquoted(monkeypatch, secret):
    monkeypatch.setenv("TOCSIN_TEST_DD", secret)
    loaded = load('[export.datadog]\napi_key_env = "TOCSIN_TEST_DD"\n')

    with pytest.raises(ConfigError) as caught:
        read_secrets(loaded, "tocsin.toml")

    assert str(caught.value) == (
        "tocsin.toml: export.datadog.api_key_env: the Datadog API key holds a"
        " control character"
    )


def test_no_api_key_turns_the_export_off(monkeypatch):
    monkeypatch.delenv("TOCSIN_TEST_DD", raising=False)
    loaded = load('[export.datadog]\napi_key_env = "TOCSIN_TEST_DD"\n')

    assert read_secrets(loaded, "tocsin.toml").datadog_api_key is None


def test_webhook_urls_come_from_value_environment_and_credentials(
    monkeypatch, tmp_path
):
    (tmp_path / "hook-url").write_text("https://hooks.example/c\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("TOCSIN_TEST_HOOK", "https://hooks.example/b")
    loaded = load(
        HOOK.replace("ops", "a")
        + 'url = "https://hooks.example/a"\n'
        + HOOK.replace("ops", "b")
        + 'url_env = "TOCSIN_TEST_HOOK"\n'
        + HOOK.replace("ops", "c")
        + 'url_file = "hook-url"\n'
        + '[[channels]]\nname = "log"\ntype = "log"\n'
    )

    assert read_secrets(loaded, "tocsin.toml").channels == {
        "a": {"url": "https://hooks.example/a"},
        "b": {"url": "https://hooks.example/b"},
        "c": {"url": "https://hooks.example/c"},
        "log": {},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HOOK + 'url_env = "TOCSIN_TEST_MISSING"\n',
            "tocsin.toml: channels[0].url_env: no webhook URL of channel ops:"
            " 'TOCSIN_TEST_MISSING' is empty or not set",
        ),
        (
            HOOK + 'url_file = "/nonexistent/hook-url"\n',
            "tocsin.toml: channels[0].url_file: cannot read the webhook URL of"
            " channel ops from '/nonexistent/hook-url': No such file or directory",
        ),
        (
            HOOK + 'url_file = "hook-url"\n',
            "tocsin.toml: channels[0].url_file: cannot read the webhook URL of"
            " channel ops from 'hook-url' (no $CREDENTIALS_DIRECTORY):"
            " No such file or directory",
        ),
        (
            '[export.datadog]\napi_key_file = "/nonexistent/dd.key"\n',
            "tocsin.toml: export.datadog.api_key_file: cannot read the Datadog API"
            " key from '/nonexistent/dd.key': No such file or directory",
        ),
    ],
)
def test_an_unreadable_secret_names_the_file_and_the_key(
    text, expected, monkeypatch, tmp_path
):
    monkeypatch.delenv("TOCSIN_TEST_MISSING", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError) as caught:
        read_secrets(load(text), "tocsin.toml")

    assert str(caught.value) == expected


def test_a_non_http_url_is_refused_without_quoting_it(monkeypatch):
    monkeypatch.setenv("TOCSIN_TEST_HOOK", "ftp://example/secret-token")
    loaded = load(HOOK + 'url_env = "TOCSIN_TEST_HOOK"\n')

    with pytest.raises(ConfigError) as caught:
        read_secrets(loaded, "tocsin.toml")

    assert str(caught.value) == (
        "tocsin.toml: channels[0].url_env: the webhook URL of channel ops must"
        " start with"
        " http:// or https://"
    )
    assert "secret-token" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example:99999/secret-token", "has a port that is not"),
        ("http://hooks.example:0/secret-token", "has a port that is not"),
        ("http:///secret-token", "must name a host"),
        ("http://hooks example/secret-token", "must not hold white space"),
        ("http://hooks.example/a b/secret-token", "must not hold white space"),
        ("http://-hooks-/secret-token", "must name a host"),
    ],
)
def test_a_url_that_can_never_be_reached_is_refused_where_it_is_read(
    monkeypatch, url, problem
):
    monkeypatch.setenv("TOCSIN_TEST_HOOK", url)
    from_env = load(HOOK + 'url_env = "TOCSIN_TEST_HOOK"\n')

    with pytest.raises(ConfigError) as read:
        read_secrets(from_env, "tocsin.toml")
    with pytest.raises(ConfigError) as checked:
        config.parse(HOOK + f"url = {url!r}\n", "t.toml")

    assert read.value.key == "channels[0].url_env"
    assert checked.value.key == "channels[0].url"
    for error in (read.value, checked.value):
        assert problem in str(error)
        assert "secret-token" not in str(error)


def test_a_routing_key_of_the_wrong_length_is_refused_unquoted(monkeypatch):
    monkeypatch.setenv("TOCSIN_TEST_PD", "short-routing-key")
    loaded = load(
        '[[channels]]\nname = "page"\ntype = "pagerduty"\n'
        'routing_key_env = "TOCSIN_TEST_PD"\n'
    )

    with pytest.raises(ConfigError) as caught:
        read_secrets(loaded, "tocsin.toml")

    assert str(caught.value) == (
        "tocsin.toml: channels[0].routing_key_env: the PagerDuty routing key of"
        " channel page must be 32 characters long, not 17"
    )


def test_pagerduty_secrets_are_read_by_name(monkeypatch):
    monkeypatch.setenv("TOCSIN_TEST_PD", "0123456789abcdef0123456789abcdef")
    loaded = load(
        '[[channels]]\nname = "page"\ntype = "pagerduty"\n'
        'routing_key_env = "TOCSIN_TEST_PD"\nwebhook_secret = "one,two"\n'
    )

    assert read_secrets(loaded, "tocsin.toml").channels["page"] == {
        "routing_key": "0123456789abcdef0123456789abcdef",
        "webhook_secret": "one,two",
    }
