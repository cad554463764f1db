"""The detectors of personal data, the redactor's uses and ``[privacy]``."""

import json
import logging

import pytest

from tocsin import config, logs
from tocsin.errors import ConfigError
from tocsin.redaction import DETECTORS, Redactor, luhn_ok

REDACTOR = Redactor(["user_email", "Customer_ID"])
MARK = "[REDACTED]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # email
        ("bob@example.com", MARK),
        ("mail bob.smith+ml@mail.example.co.uk now", f"mail {MARK} now"),
        # phone: international, North American, national with a trunk 0
        ("+44 7911 123456", MARK),
        ("+1 (555) 123-4567", MARK),
        ("+4915112345678", MARK),
        ("555-123-4567", MARK),
        ("(555) 123 4567", MARK),
        ("call 555.123.4567.", f"call {MARK}."),
        ("020 7946 0958", MARK),
        ("06-12-34-56-78", MARK),
        # national_id: US SSN, UK National Insurance number
        ("123-45-6789", MARK),
        ("ssn 078-05-1120 on file", f"ssn {MARK} on file"),
        ("AB 12 34 56 C", MARK),
        ("JG103759A", MARK),
        # card: 13 to 19 digits, grouped or not, Luhn-valid
        ("4111 1111 1111 1111", MARK),
        ("4111-1111-1111-1111", MARK),
        ("4111111111111111", MARK),
        ("378282246310005", MARK),
        ("5555555555554444", MARK),
        ("6011 0009 9013 9424", MARK),
    ],
)
def test_personal_data_is_replaced(text, expected):
    assert REDACTOR.text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # ordinary ML labels
        "model=fraud-v2",
        "fraud-v2",
        "2024.11.03",
        "version=2024.11.03",
        "0042",
        "shard:0042",
        "e83c5163316f89bfbde7d9ab23ca2e25604af290",
        "123e4567-e89b-12d3-a456-426614174000",
        "12345678-1234-1234-1234-123456789012",
        "v1.2.3",
        "1.5e-05",
        "0.000123",
        # timestamps and plain numbers
        "1700000000",
        # Luhn-valid, as one in ten numbers is: no card scheme starts with 1
        "1733340000004",
        "1733340000000000004",
        "2024-11-03",
        "2024-11-03T12:30:45Z",
        "12:30:45",
        "12345",
        "+1",
        "-12345678",
        # addresses
        "10.0.0.1:443",
        "192.168.100.200",
        # SSNs never issued
        "000-12-3456",
        "666-12-3456",
        "987-65-4321",
        "123-00-4567",
        "123-45-0000",
        # NI prefixes never issued, and lower case
        "GB123456A",
        "ab123456c",
        # a card-shaped number failing Luhn, and a Luhn-valid number no
        # scheme issues
        "4111111111111112",
        "1234567812345670",
        # short digit runs with separators
        "12 34 56",
        "01-02-2024",
    ],
)
def test_ordinary_values_stay_untouched(text):
    assert REDACTOR.text(text) == text


def test_the_luhn_check():
    assert luhn_ok("4111111111111111")
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    assert not luhn_ok("4111111111111112")


def test_a_configured_field_keeps_its_key_and_loses_its_value():
    assert REDACTOR.tag("user_email:anything") == f"user_email:{MARK}"
    assert REDACTOR.tag("USER_EMAIL:anything") == f"USER_EMAIL:{MARK}"
    assert REDACTOR.tag("customer_id:77") == f"customer_id:{MARK}"
    assert REDACTOR.tag("model:fraud-v2") == "model:fraud-v2"
    assert REDACTOR.tag("contact:bob@example.com") == f"contact:{MARK}"
    assert REDACTOR.tag("bob@example.com") == MARK
    assert REDACTOR.labels({"Customer_Id": "77", "team": "ml"}) == {
        "Customer_Id": MARK,
        "team": "ml",
    }


def test_a_log_line_loses_the_values_written_after_a_configured_field():
    line = 'bad line "x:1|g|#user_email:bob,customer_id=77" and {"user_email": "z"}'

    assert REDACTOR.log_line(line) == (
        f'bad line "x:1|g|#user_email:{MARK},customer_id={MARK}" and'
        f' {{"user_email": "{MARK}"}}'
    )


def test_only_the_chosen_detectors_run_with_the_chosen_marker():
    emails_only = Redactor(detectors=["email"], marker="<pii>")

    assert emails_only.text("bob@example.com 123-45-6789") == "<pii> 123-45-6789"
    assert Redactor(detectors=[]).text("bob@example.com") == "bob@example.com"
    assert Redactor(detectors=DETECTORS).text("4111111111111111") == MARK


def test_a_repeated_tag_is_answered_from_the_cache():
    redactor = Redactor()
    first = redactor.tag("contact:bob@example.com")
    # A changed marker shows whether the second call ran the detectors again.
    redactor.marker = "changed"

    assert redactor.tag("contact:bob@example.com") is first


def test_privacy_defaults_turn_every_detector_on():
    loaded = config.parse("", "empty.toml")

    assert loaded.privacy.detectors == list(DETECTORS)
    assert loaded.privacy.redact_fields == []
    assert loaded.privacy.marker == MARK


def test_a_privacy_table_loads():
    loaded = config.parse(
        '[privacy]\nredact_fields = ["user_email"]\ndetectors = ["email"]\n'
        'marker = "***"\n',
        "good.toml",
    )

    assert Redactor.from_config(loaded.privacy).value("User_Email", "x") == "***"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('marker = ""', "bad.toml: privacy.marker: must not be empty"),
        (
            'marker = "a\\nb"',
            "bad.toml: privacy.marker: must not contain control characters",
        ),
        (
            'redact_fields = ["ok", ""]',
            "bad.toml: privacy.redact_fields[1]: expected a field name without"
            " surrounding spaces or control characters, got ''",
        ),
        (
            'redact_fields = [" email"]',
            "bad.toml: privacy.redact_fields[0]: expected a field name without"
            " surrounding spaces or control characters, got ' email'",
        ),
        (
            'redact_fields = ["a:b"]',
            "bad.toml: privacy.redact_fields[0]: must not contain ':', got 'a:b'",
        ),
        (
            'redact_fields = ["Email", "email"]',
            "bad.toml: privacy.redact_fields[1]: 'email' is listed twice",
        ),
        (
            'detectors = ["email", "email"]',
            "bad.toml: privacy.detectors: a detector is listed twice",
        ),
        (
            'detectors = ["iban"]',
            "bad.toml: privacy.detectors[0]: Invalid enum value 'iban'; expected"
            " one of 'card', 'email', 'national_id', 'phone'",
        ),
        ("redact = []", "bad.toml: privacy.redact: unknown key"),
    ],
)
def test_a_bad_privacy_table_names_the_file_and_the_key(table, expected):
    with pytest.raises(ConfigError) as raised:
        config.parse(f"[privacy]\n{table}\n", "bad.toml")

    assert str(raised.value) == expected


def test_every_string_of_a_log_line_is_redacted(monkeypatch):
    monkeypatch.setattr(logs, "_personal", None)
    logs.redact_personal_data(Redactor(["user_email"]))
    record = logging.LogRecord(
        "tocsin.test",
        logging.WARNING,
        __file__,
        1,
        "bad line %r",
        ("x|#user_email:zed",),
        None,
    )
    record.reason = "from bob@example.com"
    record.listeners = ["card 4111111111111111"]
    record.detail = {"labels": {"User_Email": {"nested": 1}, "n": 3, "to": "x@y.io"}}

    line = json.loads(logs.JsonFormatter().format(record))

    assert line["message"] == f"bad line 'x|#user_email:{MARK}'"
    assert line["reason"] == f"from {MARK}"
    assert line["listeners"] == [f"card {MARK}"]
    assert line["detail"] == {"labels": {"User_Email": MARK, "n": 3, "to": MARK}}


def test_log_lines_are_left_alone_without_a_redactor(monkeypatch):
    monkeypatch.setattr(logs, "_personal", None)
    record = logging.LogRecord(
        "tocsin.test", logging.INFO, __file__, 1, "bob@example.com", (), None
    )

    assert json.loads(logs.JsonFormatter().format(record))["message"] == (
        "bob@example.com"
    )
