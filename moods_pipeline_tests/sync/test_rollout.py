"""MOODS_ROLLOUT: parsing, stable percentage buckets, handle lists (pure, no stack)."""

from __future__ import annotations

import hashlib

import pytest

from moods_pipeline.settings import ConfigError, load_settings
from moods_pipeline.sync.rollout import Rollout, bucket, in_rollout

SUBS = [f"auth0|{i:024x}" for i in range(2000)]


def test_bucket_is_stable_and_published():
    # Test vector: sha256("auth0|66db0c5e1c2e0f4a3b2c1d0e")[:8] big-endian mod 100.
    sub = "auth0|66db0c5e1c2e0f4a3b2c1d0e"
    expected = int.from_bytes(hashlib.sha256(sub.encode()).digest()[:8], "big") % 100
    assert bucket(sub) == expected
    assert all(0 <= bucket(s) < 100 for s in SUBS)


@pytest.mark.parametrize("spec", ["all", "ALL", " all ", None, ""])
def test_all_includes_everyone(spec):
    assert all(Rollout.parse(spec).includes(s) for s in SUBS[:50])


def test_off_includes_nobody():
    rollout = Rollout.parse("off")
    assert rollout.is_off and not any(rollout.includes(s, "jeffrey") for s in SUBS[:50])
    assert Rollout.parse("0%").is_off and not any(Rollout.parse("0%").includes(s) for s in SUBS)
    assert all(Rollout.parse("100%").includes(s) for s in SUBS)


def test_percentage_is_roughly_the_share_and_only_grows():
    for percent in (1, 10, 50, 90):
        share = sum(Rollout.parse(f"{percent}%").includes(s) for s in SUBS) / len(SUBS)
        assert abs(share - percent / 100) < 0.04, (percent, share)
    ten = {s for s in SUBS if in_rollout("10%", s)}
    twenty = {s for s in SUBS if in_rollout("20%", s)}
    assert ten < twenty  # raising the percentage only adds users


def test_percentage_ignores_handle():
    sub = next(s for s in SUBS if bucket(s) < 10)
    assert in_rollout("10%", sub, None) and in_rollout("10%", sub, "anyone")


def test_handle_list():
    rollout = Rollout.parse("@jeffrey, @Alice")
    assert rollout.mode == "handles" and rollout.handles == {"jeffrey", "alice"}
    assert rollout.includes("auth0|x", "jeffrey")
    assert rollout.includes("auth0|y", "ALICE")
    assert rollout.includes("auth0|y", "@alice")
    assert not rollout.includes("auth0|z", "bob")
    assert not rollout.includes("auth0|z", None)  # a user without a handle is out
    assert rollout.describe() == "@alice,@jeffrey"


@pytest.mark.parametrize("spec", ["some", "101%", "-1%", "10", "jeffrey", "@a,b", "@a,,@b", "@", "1.5%"])
def test_malformed_is_refused_naming_the_variable(spec):
    with pytest.raises(ConfigError, match="MOODS_ROLLOUT"):
        Rollout.parse(spec)
    with pytest.raises(ConfigError, match="MOODS_ROLLOUT"):  # one grammar: the settings refuse it too
        load_settings({"MOODS_ROLLOUT": spec}, connections=False)


@pytest.mark.parametrize("spec", ["all", "off", "25%", "@a,@b", "@solo", "ALL", "Off", " 0% ", "@a, @B", "100%"])
def test_every_form_settings_accepts_parses(spec):
    settings = load_settings({"MOODS_ROLLOUT": spec, "MONGODB_CONNECTION_STRING": "mongodb://x", "PDS_URL": "http://x"})
    assert Rollout.parse(settings.rollout).describe() in (spec.strip().lower(), "@a,@b")


def test_settings_refuses_what_the_parser_refuses():
    with pytest.raises(ConfigError, match="MOODS_ROLLOUT"):
        load_settings({"MOODS_ROLLOUT": "half", "MONGODB_CONNECTION_STRING": "mongodb://x", "PDS_URL": "http://x"})
