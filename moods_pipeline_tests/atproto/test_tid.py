"""TIDs: the atproto encoding, docs/interface.md's deterministic mood TIDs, and collision resolution."""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moods_pipeline.atproto import tid
from moods_pipeline.atproto.tid import (
    MAX_CLOCK_ID,
    MAX_MICROS,
    MAX_WHEN_MS,
    assign_rkeys,
    is_valid_tid,
    mood_tid,
    parse_tid,
    tid_from_parts,
)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ms(iso: str) -> int:
    return (datetime.fromisoformat(iso.replace("Z", "+00:00")) - EPOCH) // timedelta(milliseconds=1)


# --- the published test vector (docs/interface.md "Record keys") -----------------------------------

VECTOR_ID = "68e8064c11885fb93a529c8d"
VECTOR_WHEN = "2025-10-09T19:00:28.821Z"
# Cross-checked with the reference implementation: @atproto/common-web's
# TID.fromTime(1760036428821273, 885).toString() == "3m2rtp45gstvp".
VECTOR_TID = "3m2rtp45gstvp"


def test_published_vector_computed_independently():
    # The contract's recipe, spelled out with hashlib alone.
    h = int.from_bytes(hashlib.sha256(VECTOR_ID.encode()).digest()[:8], "big")
    assert h == 12506296020348789273
    micro_part, clock_id = h % 1000, (h // 1000) % 1024
    assert (micro_part, clock_id) == (273, 885)
    when_ms = ms(VECTOR_WHEN)
    assert when_ms == 1760036428821
    micros = when_ms * 1000 + micro_part
    # Encode by hand: 64-bit integer, 13 base32-sortable characters, most significant first.
    n = (micros << 10) | clock_id
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    by_hand = "".join(alphabet[(n >> (5 * i)) & 31] for i in reversed(range(13)))
    assert by_hand == VECTOR_TID
    assert mood_tid(VECTOR_ID, when_ms) == VECTOR_TID
    assert parse_tid(VECTOR_TID) == (micros, clock_id)
    assert assign_rkeys([(VECTOR_ID, when_ms)]) == {VECTOR_ID: VECTOR_TID}


def test_spec_example_decodes_as_the_reference_implementation_does():
    # The atproto spec's example TID; @atproto/common-web's TID.fromStr gives
    # timestamp() == 1688137381887007 and clockid() == 6.
    assert parse_tid("3jzfcijpj2z2a") == (1688137381887007, 6)
    assert tid_from_parts(1688137381887007, 6) == "3jzfcijpj2z2a"
    assert EPOCH + timedelta(microseconds=1688137381887007) == datetime(
        2023, 6, 30, 15, 3, 1, 887007, tzinfo=timezone.utc
    )


def test_extremes():
    assert tid_from_parts(0, 0) == "2222222222222"
    assert tid_from_parts(0, 1) == "2222222222223"
    assert tid_from_parts(1, 0) == "2222222222322"  # 1 << 10 = 32 * 32: third digit from the right
    assert tid_from_parts(MAX_MICROS, MAX_CLOCK_ID) == "bzzzzzzzzzzzz"
    assert parse_tid("bzzzzzzzzzzzz") == (MAX_MICROS, MAX_CLOCK_ID)
    assert EPOCH + timedelta(milliseconds=MAX_WHEN_MS) == datetime(
        2255, 6, 5, 23, 47, 34, 739000, tzinfo=timezone.utc
    )
    # Every id gets a TID at the last valid millisecond; one more and the largest hash overflows.
    assert MAX_WHEN_MS * 1000 + 999 <= MAX_MICROS < (MAX_WHEN_MS + 1) * 1000 + 999


@pytest.mark.parametrize(
    "args, error",
    [
        ((-1, 0), ValueError),
        ((MAX_MICROS + 1, 0), ValueError),
        ((0, -1), ValueError),
        ((0, MAX_CLOCK_ID + 1), ValueError),
        ((True, 0), TypeError),
        ((1.0, 0), TypeError),
        ((0, "1"), TypeError),
    ],
)
def test_tid_from_parts_rejects(args, error):
    with pytest.raises(error):
        tid_from_parts(*args)


@pytest.mark.parametrize(
    "s", ["3jzfcijpj2z2a", "7777777777777", "3zzzzzzzzzzzz", "2222222222222", "bzzzzzzzzzzzz"]
)
def test_valid_tids(s):
    assert is_valid_tid(s)
    assert tid_from_parts(*parse_tid(s)) == s


@pytest.mark.parametrize(
    "s",
    [
        "3jzfcijpj2z21",  # 1 is not base32-sortable
        "0000000000000",
        "3JZFCIJPJ2Z2A",  # case-sensitive
        "3jzfcijpj2z2aa",
        "3jzfcijpj2z2",
        "",
        "3jzf-cij-pj2z-2a",
        "zzzzzzzzzzzzz",  # top bit set
        "kjzfcijpj2z2a",
        "cjzfcijpj2z2a",  # allowed by the spec's loose regex, but the top bit would be 1
        "3jzfcijpj2z2a\n",
        " 3jzfcijpj2z2a",
        None,
        1234567890123,
    ],
)
def test_invalid_tids(s):
    assert not is_valid_tid(s)
    with pytest.raises(ValueError):
        parse_tid(s)


@given(st.integers(0, MAX_MICROS), st.integers(0, MAX_CLOCK_ID))
def test_round_trip(micros, clock_id):
    s = tid_from_parts(micros, clock_id)
    assert len(s) == 13 and is_valid_tid(s)
    assert parse_tid(s) == (micros, clock_id)


@given(
    st.tuples(st.integers(0, MAX_MICROS), st.integers(0, MAX_CLOCK_ID)),
    st.tuples(st.integers(0, MAX_MICROS), st.integers(0, MAX_CLOCK_ID)),
)
def test_string_order_is_time_order(a, b):
    # Sorting rkeys as strings sorts by time, then clock id.
    assert (tid_from_parts(*a) < tid_from_parts(*b)) == (a < b)


object_ids = st.binary(min_size=12, max_size=12).map(bytes.hex)
when_ms = st.integers(0, MAX_WHEN_MS)


@given(object_ids, object_ids, when_ms, when_ms)
def test_later_when_gives_larger_tid(id_a, id_b, when_a, when_b):
    if when_a < when_b:
        assert mood_tid(id_a, when_a) < mood_tid(id_b, when_b)


@given(object_ids, when_ms)
def test_mood_tid_keeps_the_millisecond(mood_id, when):
    micros, _ = parse_tid(mood_tid(mood_id, when))
    assert micros // 1000 == when


@pytest.mark.parametrize(
    "mood_id",
    ["68E8064C11885FB93A529C8D", "68e8064c11885fb93a529c8", "68e8064c11885fb93a529c8dd", "g" * 24, 42, None],
)
def test_mood_tid_rejects_bad_ids(mood_id):
    with pytest.raises(ValueError):
        mood_tid(mood_id, 0)


@pytest.mark.parametrize("when", [-1, MAX_WHEN_MS + 1])
def test_mood_tid_rejects_when_out_of_range(when):
    with pytest.raises(ValueError):
        mood_tid(VECTOR_ID, when)


def test_mood_tid_rejects_non_int_when():
    with pytest.raises(TypeError):
        mood_tid(VECTOR_ID, 1.5)
    with pytest.raises(TypeError):
        mood_tid(VECTOR_ID, True)


def test_range_ends():
    assert parse_tid(mood_tid(VECTOR_ID, 0)) == (273, 885)
    assert parse_tid(mood_tid("f" * 24, MAX_WHEN_MS))[0] <= MAX_MICROS


# --- collisions -----------------------------------------------------------------------------


def _key(mood_id: str) -> tuple[int, int]:
    h = int.from_bytes(hashlib.sha256(mood_id.encode()).digest()[:8], "big")
    return h % 1000, (h // 1000) % 1024


@functools.lru_cache(maxsize=None)
def _colliding() -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """Found by brute force over counter ids: three ids with the same (micro part, clock id); and
    two colliding ids a < b with an id d whose TID, at a suitable `when`, is one microsecond after
    theirs with the same clock id."""
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for n in range(60_000):
        mood_id = f"{n:024x}"
        groups[_key(mood_id)].append(mood_id)
    triple = next(tuple(ids[:3]) for ids in groups.values() if len(ids) >= 3)
    for (part, clock), ids in groups.items():
        neighbours = groups.get(((part + 1) % 1000, clock))
        if len(ids) >= 2 and neighbours:
            return triple, (ids[0], ids[1], neighbours[0])
    raise AssertionError("no neighbour found; raise the search bound")


WHEN = ms("2025-10-09T19:00:28.821Z")


def _neighbour_when(a: str, d: str) -> int:
    """The `when` at which d's natural TID is one microsecond after a's at WHEN."""
    target = WHEN * 1000 + _key(a)[0] + 1
    return (target - _key(d)[0]) // 1000


def test_collisions_take_the_next_free_microsecond_in_object_id_order():
    (a, b, c), _ = _colliding()
    assert a < b < c and _key(a) == _key(b) == _key(c)
    natural = mood_tid(a, WHEN)
    assert mood_tid(b, WHEN) == mood_tid(c, WHEN) == natural
    micros, clock = parse_tid(natural)
    rkeys = assign_rkeys([(c, WHEN), (a, WHEN), (b, WHEN)])
    assert rkeys == {
        a: natural,
        b: tid_from_parts(micros + 1, clock),
        c: tid_from_parts(micros + 2, clock),
    }
    assert list(rkeys) == [a, b, c]


def test_collision_chain_skips_a_taken_neighbour():
    _, (a, b, d) = _colliding()
    when_d = _neighbour_when(a, d)
    micros, clock = parse_tid(mood_tid(a, WHEN))
    assert parse_tid(mood_tid(d, when_d)) == (micros + 1, clock)
    rkeys = assign_rkeys([(d, when_d), (b, WHEN), (a, WHEN)])
    # a keeps its TID. Whichever of b and d has the smaller ObjectId gets micros + 1 (b by
    # moving, d naturally); the other moves on to micros + 2.
    first, second = sorted([b, d])
    assert rkeys[a] == tid_from_parts(micros, clock)
    assert rkeys[first] == tid_from_parts(micros + 1, clock)
    assert rkeys[second] == tid_from_parts(micros + 2, clock)


def test_no_collision_means_natural_tids():
    moods = [(f"{i:024x}", WHEN + i) for i in range(50)]
    assert assign_rkeys(moods) == {i: mood_tid(i, w) for i, w in moods}


def test_duplicates():
    assert assign_rkeys([(VECTOR_ID, WHEN), (VECTOR_ID, WHEN)]) == {VECTOR_ID: VECTOR_TID}
    with pytest.raises(ValueError):
        assign_rkeys([(VECTOR_ID, WHEN), (VECTOR_ID, WHEN + 1)])
    assert assign_rkeys([]) == {}


def test_assign_rkeys_validates_inputs():
    with pytest.raises(ValueError):
        assign_rkeys([("nope", WHEN)])
    with pytest.raises(ValueError):
        assign_rkeys([(VECTOR_ID, -5)])


def _pool() -> list[tuple[str, int]]:
    (a, b, c), (e, f, d) = _colliding()
    pool = [(a, WHEN), (b, WHEN), (c, WHEN), (e, WHEN + 7), (f, WHEN + 7)]
    pool.append((d, _neighbour_when(e, d) + 7))
    pool += [(f"{0xABC000 + i:024x}", WHEN + (i % 3)) for i in range(12)]
    return pool


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_assignment_is_independent_of_input_order(data):
    pool = _pool()
    subset = data.draw(st.lists(st.sampled_from(pool), unique=True, min_size=1))
    shuffled = data.draw(st.permutations(subset))
    with_dupes = shuffled + data.draw(st.lists(st.sampled_from(subset), max_size=3))
    expected = assign_rkeys(sorted(subset))
    assert assign_rkeys(iter(with_dupes)) == expected
    assert len(set(expected.values())) == len(expected)  # no two moods share an rkey
    for mood_id, when in subset:
        micros, clock = parse_tid(expected[mood_id])
        natural_micros, natural_clock = parse_tid(mood_tid(mood_id, when))
        assert clock == natural_clock and micros >= natural_micros
        if not any(other != mood_id and _key(other) == _key(mood_id) for other, _ in subset):
            if (mood_id, when) not in pool[:6]:
                assert micros == natural_micros


def test_module_exports_the_contract_constants():
    assert tid.ALPHABET == "234567abcdefghijklmnopqrstuvwxyz"
    assert tid.TID_LENGTH == 13
