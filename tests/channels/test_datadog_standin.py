"""The Datadog stand-in refuses what the real intake refuses, and nothing else."""

from __future__ import annotations

import gzip
import os
import zlib

import aiohttp
import orjson
import pytest

from tests.standins.datadog import RAW_LIMIT, WIRE_LIMIT, DatadogStandIn
from tocsin.clock import ManualClock

KEY = "standin-key-abcdef"
NOW = 1_750_000_000


def good(**changes: object) -> dict:
    series = {
        "metric": "model.latency",
        "type": 3,
        "points": [{"timestamp": NOW, "value": 1.5}],
        "tags": ["env:prod", "model"],
        "resources": [{"type": "host", "name": "gpu-1"}],
    }
    series.update(changes)
    # None at the top level means "leave the field out".
    return {key: value for key, value in series.items() if value is not None}


def body(*series: dict) -> bytes:
    return orjson.dumps({"series": list(series)})


@pytest.fixture
async def standin():
    async with DatadogStandIn(KEY, clock=ManualClock(NOW)) as running:
        yield running


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


async def post(
    session: aiohttp.ClientSession,
    standin: DatadogStandIn,
    data: bytes,
    *,
    key: str | None = KEY,
    encoding: str | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, dict]:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if key is not None:
        headers["DD-API-KEY"] = key
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    url = standin.url + "/api/v2/series"
    # Without this aiohttp would label the bytes application/octet-stream.
    skipped = () if content_type is not None else ("Content-Type",)
    async with session.post(
        url, data=data, headers=headers, skip_auto_headers=skipped
    ) as response:
        return response.status, orjson.loads(await response.read())


async def test_accepts_a_valid_series_and_records_it(standin, session):
    status, answer = await post(
        session, standin, zlib.compress(body(good())), encoding="deflate"
    )

    assert (status, answer) == (202, {"errors": []})
    assert standin.accepted_series() == [good()]
    assert standin.accepted[0].headers["Content-Encoding"] == "deflate"


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
async def test_refuses_a_missing_or_wrong_key(standin, session, key):
    status, answer = await post(session, standin, body(good()), key=key)

    assert (status, answer) == (403, {"errors": ["Forbidden"]})
    assert standin.accepted == []
    assert standin.rejected[0].reason == "missing or wrong DD-API-KEY"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 202),
        ("application/json; charset=utf-8", 202),
        ("Application/JSON", 202),
        (None, 400),
        ("text/json", 400),
        ("text/plain", 400),
        ("application/octet-stream", 400),
        ("application/x-www-form-urlencoded", 400),
    ],
)
async def test_content_type_must_be_json(standin, session, content_type, status):
    got, answer = await post(session, standin, body(good()), content_type=content_type)

    assert got == status
    if status == 400:
        assert answer == {"errors": ["Content-Type must be application/json"]}
        assert standin.accepted == []


@pytest.mark.parametrize(
    ("encoding", "packed", "status"),
    [
        ("deflate", zlib.compress, 202),
        ("gzip", gzip.compress, 202),
        ("identity", lambda raw: raw, 202),
        ("br", lambda raw: raw, 400),
        ("zstd1", lambda raw: raw, 400),
        # Raw deflate without the zlib header is not what "deflate" means here.
        ("deflate", lambda raw: zlib.compress(raw)[2:-4], 400),
        ("gzip", zlib.compress, 400),
        ("deflate", lambda raw: zlib.compress(raw)[:-6], 400),
    ],
)
async def test_content_encodings(standin, session, encoding, packed, status):
    got, _ = await post(session, standin, packed(body(good())), encoding=encoding)

    assert got == status


def padded(size: int) -> bytes:
    """Return a valid body of exactly ``size`` bytes (JSON allows spaces)."""
    core = body(good())
    return core[:-1] + b" " * (size - len(core)) + core[-1:]


@pytest.mark.parametrize(("size", "status"), [(WIRE_LIMIT, 202), (WIRE_LIMIT + 1, 413)])
async def test_wire_size_limit(standin, session, size, status):
    got, _ = await post(session, standin, padded(size))

    assert got == status


@pytest.mark.parametrize(("size", "status"), [(RAW_LIMIT - 1, 202), (RAW_LIMIT, 413)])
async def test_decompressed_size_limit(standin, session, size, status):
    data = zlib.compress(padded(size))
    assert len(data) < WIRE_LIMIT

    got, _ = await post(session, standin, data, encoding="deflate")

    assert got == status


async def test_incompressible_body_over_the_wire_limit_is_413(standin, session):
    noise = zlib.compress(os.urandom(WIRE_LIMIT + 10), 0)

    got, _ = await post(session, standin, noise, encoding="deflate")

    assert got == 413


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            b'{"series":[{"metric":"a","type":3,"points":[{"timestamp":1750000000,'
            b'"value":NaN}]}]}',
            "invalid JSON",
        ),
        (
            b'{"series":[{"metric":"a","type":3,"points":[{"timestamp":1750000000,'
            b'"value":Infinity}]}]}',
            "invalid JSON",
        ),
        (b"[]", "object with a series array"),
        (b'{"metrics":[]}', "object with a series array"),
        (b'{"series":{}}', "object with a series array"),
        (b'{"series":[]}', "must not be empty"),
    ],
)
async def test_refuses_bad_documents(standin, session, payload, reason):
    status, answer = await post(session, standin, payload)

    assert status == 400
    assert reason in answer["errors"][0]
    assert reason in standin.rejected[0].reason


BAD_SERIES = [
    ("name starts with a digit", {"metric": "1abc"}),
    ("name starts with _", {"metric": "_abc"}),
    ("name with a dash", {"metric": "a-b"}),
    ("name over 200", {"metric": "a" * 201}),
    ("unicode name", {"metric": "модель.latency"}),
    ("type as string", {"type": "gauge"}),
    ("type 4", {"type": 4}),
    ("type bool", {"type": True}),
    ("interval float", {"interval": 1.5}),
    ("no points", {"points": []}),
    ("points missing", {"points": None}),
    ("float timestamp", {"points": [{"timestamp": NOW + 0.5, "value": 1}]}),
    ("string timestamp", {"points": [{"timestamp": str(NOW), "value": 1}]}),
    ("too old", {"points": [{"timestamp": NOW - 3601, "value": 1}]}),
    ("too new", {"points": [{"timestamp": NOW + 601, "value": 1}]}),
    ("string value", {"points": [{"timestamp": NOW, "value": "1"}]}),
    ("bool value", {"points": [{"timestamp": NOW, "value": True}]}),
    ("null value", {"points": [{"timestamp": NOW, "value": None}]}),
    ("v1 point pair", {"points": [[NOW, 1.0]]}),
    ("tags not a list", {"tags": "env:prod"}),
    ("tag over 200", {"tags": ["a" * 201]}),
    ("tag ends with colon", {"tags": ["key:"]}),
    ("tag starts with digit", {"tags": ["5xx"]}),
    ("tag with a space", {"tags": ["env:pro d"]}),
    ("unknown field", {"host": "gpu-1"}),
    ("unit not a string", {"unit": 1}),
    ("metadata not an object", {"metadata": "origin"}),
    ("metadata unknown field", {"metadata": {"origin": {}, "owner": "ml"}}),
    ("origin not an object", {"metadata": {"origin": [1, 2, 3]}}),
    ("origin unknown field", {"metadata": {"origin": {"team": 1}}}),
    ("origin code over 1000", {"metadata": {"origin": {"product": 1001}}}),
    ("origin code a string", {"metadata": {"origin": {"service": "7"}}}),
    ("origin code a float", {"metadata": {"origin": {"metric_type": 1.0}}}),
    ("origin code a bool", {"metadata": {"origin": {"metric_type": True}}}),
    ("resource without type", {"resources": [{"name": "gpu-1"}]}),
]


@pytest.mark.parametrize(
    "changes", [c for _, c in BAD_SERIES], ids=[n for n, _ in BAD_SERIES]
)
async def test_refuses_series_that_break_the_contract(standin, session, changes):
    status, answer = await post(session, standin, body(good(), good(**changes)))

    assert status == 400
    assert answer["errors"][0].startswith("series[1]:")
    assert standin.accepted == []


GOOD_SERIES = [
    ("oldest allowed", {"points": [{"timestamp": NOW - 3600, "value": 1}]}),
    ("newest allowed", {"points": [{"timestamp": NOW + 600, "value": 1}]}),
    ("integer value", {"points": [{"timestamp": NOW, "value": 7}]}),
    ("name of 200", {"metric": "a" * 200}),
    ("tag of 200", {"tags": ["a" * 200]}),
    ("unicode tag", {"tags": ["modèle:ü"]}),
    ("tag value with colons", {"tags": ["addr:10.0.0.1:443", "route:/v1/a"]}),
    ("count with interval", {"type": 1, "interval": 10}),
    ("rate with interval", {"type": 2, "interval": 10}),
    ("unit", {"unit": "second"}),
    ("empty metadata", {"metadata": {}}),
    (
        "origin codes up to 1000",
        {"metadata": {"origin": {"metric_type": 0, "product": 1000, "service": 7}}},
    ),
    ("type absent", {"type": None}),
    ("tags and resources absent", {"tags": None, "resources": None}),
]


@pytest.mark.parametrize(
    "changes", [c for _, c in GOOD_SERIES], ids=[n for n, _ in GOOD_SERIES]
)
async def test_accepts_series_at_the_edges(standin, session, changes):
    status, _ = await post(session, standin, body(good(**changes)))

    assert status == 202


async def test_relaxed_tags_only_check_type_and_length(session):
    async with DatadogStandIn(KEY, clock=ManualClock(NOW), strict_tags=False) as lax:
        ok, _ = await post(session, lax, body(good(tags=["key:", "5xx"])))
        too_long, _ = await post(session, lax, body(good(tags=["a" * 201])))

    assert (ok, too_long) == (202, 400)


async def test_scripted_answers_come_first_in_order(standin, session):
    standin.fail(429, headers={"X-RateLimit-Reset": "7"})
    standin.fail(503, times=2)
    answers = []
    for _ in range(4):
        async with session.post(
            standin.url + "/api/v2/series",
            data=body(good()),
            headers={"DD-API-KEY": KEY, "Content-Type": "application/json"},
        ) as response:
            answers.append((response.status, response.headers.get("X-RateLimit-Reset")))

    assert answers == [(429, "7"), (503, None), (503, None), (202, None)]
    assert [r.reason for r in standin.requests] == [
        "scripted 429",
        "scripted 503",
        "scripted 503",
        "accepted",
    ]


async def test_a_standing_answer_follows_the_script_and_never_runs_out(
    standin, session
):
    standin.fail(503)
    standin.fail(413, times=None)
    statuses = []
    for _ in range(5):
        status, answer = await post(session, standin, body(good()))
        statuses.append(status)

    assert statuses == [503, 413, 413, 413, 413]
    assert answer == {"errors": ["scripted"]}
    assert standin.accepted == []


async def test_every_request_is_recorded_with_its_digest(standin, session):
    data = body(good())
    await post(session, standin, data)
    await post(session, standin, data, key="bad")

    first, second = standin.requests
    assert first.digest == second.digest
    assert (first.status, second.status) == (202, 403)
    assert (first.wire_size, first.raw_size) == (len(data), len(data))


async def test_wait_accepted_returns_once_enough_arrived(standin, session):
    await post(session, standin, body(good()))
    await post(session, standin, body(good(metric="b")))

    await standin.wait_accepted(2)

    assert [s["metric"] for s in standin.accepted_series()] == ["model.latency", "b"]


@pytest.mark.parametrize(("key", "status"), [(KEY, 200), ("wrong", 403)])
async def test_validate(standin, session, key, status):
    async with session.get(
        standin.url + "/api/v1/validate", headers={"DD-API-KEY": key}
    ) as response:
        answer = await response.json()

    assert response.status == status
    assert answer == ({"valid": True} if status == 200 else {"errors": ["Forbidden"]})
