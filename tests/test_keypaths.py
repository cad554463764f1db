"""Key paths in config errors: keys written as the TOML file would write them."""

import pytest

from tocsin.keypaths import toml_key


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("model", "model"),
        ("X-Api_Key2", "X-Api_Key2"),
        ("dashboard.url", '"dashboard.url"'),
        ("state dir", '"state dir"'),
        ("", '""'),
        ("modèle", '"modèle"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("X-Team\r\n", '"X-Team\\r\\n"'),
        ("nul\x00del\x7f", '"nul\\u0000del\\u007F"'),
        ("line\u2028break", '"line\\u2028break"'),
    ],
)
def test_toml_key(key, expected):
    assert toml_key(key) == expected
