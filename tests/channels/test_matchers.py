"""Label matchers: what parses, what it selects, and the error for what does not."""

import pytest

from tocsin.channels.matchers import Matcher, Matchers, parse_matcher


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('team="ml"', "team", "=", "ml"),
        ('env!="dev"', "env", "!=", "dev"),
        ('model=~"fraud-.*"', "model", "=~", "fraud-.*"),
        ('severity!~"info|low"', "severity", "!~", "info|low"),
        (' team = "ml" ', "team", "=", "ml"),
        ('_x9="a b"', "_x9", "=", "a b"),
        ('team=""', "team", "=", ""),
        (r'msg="say \"hi\""', "msg", "=", 'say "hi"'),
        (r'path="C:\\temp"', "path", "=", "C:\\temp"),
        # Backslashes other than the two escapes stay, for regexes.
        (r'gpu=~"gpu\d+"', "gpu", "=~", r"gpu\d+"),
        ('expr="a=b"', "expr", "=", "a=b"),
    ],
)
def test_matchers_that_parse(text, name, op, value):
    matcher = parse_matcher(text)

    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("team", "invalid matcher 'team': expected name=\"value\""),
        ("", "invalid matcher '': expected name=\"value\""),
        ('="ml"', "invalid matcher '=\"ml\"': '' is not a label name"),
        ('9team="ml"', "'9team' is not a label name"),
        ('team-x="ml"', "'team-x' is not a label name"),
        ("team=ml", "the value must be in double quotes"),
        ("team='ml'", "the value must be in double quotes"),
        ('team="ml', "the value must be in double quotes"),
        ('team="m"l"', 'a " inside the value must be written \\"'),
        ('team="ml\\"', "the value ends with a lone backslash"),
        ('model=~"fraud-("', "invalid regex in matcher 'model=~\"fraud-(\"':"),
        ('team=="ml"', "the value must be in double quotes"),
    ],
)
def test_matchers_that_do_not_parse(text, message):
    with pytest.raises(ValueError) as raised:
        parse_matcher(text)

    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('team="ml"', {"team": "ml"}, True),
        ('team="ml"', {"team": "ops"}, False),
        ('team="ml"', {}, False),
        ('team=""', {}, True),
        ('env!="dev"', {"env": "prod"}, True),
        ('env!="dev"', {"env": "dev"}, False),
        ('env!="dev"', {}, True),
        ('model=~"fraud-.*"', {"model": "fraud-v2"}, True),
        # Anchored at both ends.
        ('model=~"fraud"', {"model": "fraud-v2"}, False),
        ('model=~"fraud"', {"model": "anti-fraud"}, False),
        ('model=~"a|b"', {"model": "ab"}, False),
        ('model=~"a|b"', {"model": "b"}, True),
        ('model=~".*"', {}, True),
        ('model=~".+"', {}, False),
        ('severity!~"info|low"', {"severity": "low"}, False),
        ('severity!~"info|low"', {"severity": "lowest"}, True),
        ('severity!~"info|low"', {}, True),
        (r'gpu=~"gpu\d+"', {"gpu": "gpu12"}, True),
        (r'msg="say \"hi\""', {"msg": 'say "hi"'}, True),
    ],
)
def test_what_a_matcher_selects(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize(
    "text",
    ['team="ml"', 'env!="dev"', 'm=~"a.*"', 's!~"x|y"', r'q="a \"b\" \\ c"'],
)
def test_a_matcher_writes_itself_back_as_parsed(text):
    matcher = parse_matcher(text)

    assert parse_matcher(str(matcher)) == matcher
    assert str(matcher) == text


@pytest.mark.parametrize(
    ("texts", "labels", "expected"),
    [
        ([], {"any": "thing"}, True),
        (['team="ml"', 'env="prod"'], {"team": "ml", "env": "prod"}, True),
        (['team="ml"', 'env="prod"'], {"team": "ml", "env": "dev"}, False),
        (['team="ml"', 'env!="prod"'], {"team": "ml"}, True),
    ],
)
def test_every_matcher_of_a_list_must_hold(texts, labels, expected):
    assert Matchers.parse(texts).matches(labels) is expected


def test_matchers_compare_by_what_they_test():
    assert Matchers.parse(['a="1"']) == Matchers([parse_matcher('a = "1"')])
    assert parse_matcher('a=~"x"') != Matcher("a", "=", "x")
