"""How fast the reconciler is, and that it grows linearly with a user's size.

    .venv/bin/python -m bench.reconcile

Pure Python on generated data (no stack): ``reconcile()`` of one user of 250 moods (a tenth
without pointers, a seventh with changed content, ten orphans) and of one of 2,500, medians of
several calls. Prints ms per user at both sizes and ``ratio big/small=X``; a linear reconciler
gives about 10, a quadratic step about 100. Exits 1 if the ratio reaches 30.

Then the CID-exact audit against the field comparison, on the same user of 2,500 moods (median
of 3 calls each): once with the records carrying their CIDs, as listRecords gives them (a record
whose CID is the expected one is synced without reading its fields; the changed seventh still
goes through the field comparison), once with the same records without CIDs (every record's
fields compared, as before the CID audit). Both compute the expected CIDs; their cost alone is
printed too. Prints ``ratio cid/fields=X``.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime, timedelta, timezone

from moods_pipeline.atproto.cid import record_cid
from moods_pipeline.atproto.tid import tid_from_parts
from moods_pipeline.model import Mood, PdsRecord, UserAccount, iso_when
from moods_pipeline.sync.mood_record import expected_cid
from moods_pipeline.sync.reconcile import reconcile

USER = UserAccount(sub="auth0|bench", did="did:plc:bench", handle="bench")
T0 = datetime(2025, 10, 9, 19, 0, 28, 821000, tzinfo=timezone.utc)
LINEAR_LIMIT = 30


def user_data(n_moods: int) -> tuple[list[Mood], list[PdsRecord]]:
    def rkey(n: int) -> str:
        return tid_from_parts(int(T0.timestamp() * 1_000_000) + n * 1000, 7)

    moods = [Mood(id=f"{0x68e8064c11885fb93a500000 + n:024x}", user=USER.sub, text=f"mood {n}",
                  when=T0 + timedelta(minutes=n), rkey=rkey(n) if n % 10 else None) for n in range(n_moods)]
    records = [PdsRecord(rkey(n), {"$type": "computer.aesthetic.mood", "mood": "changed" if n % 7 == 0 else m.text,
                                   "when": iso_when(m.when), "ref": m.id}) for n, m in enumerate(moods)]
    records += [PdsRecord(rkey(100_000 + n), {"mood": "o"}) for n in range(10)]
    return moods, records


def median_seconds(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def seconds_per_call(n_moods: int, repeat: int) -> float:
    moods, records = user_data(n_moods)
    return median_seconds(lambda: reconcile(USER, moods, records), repeat)


def cid_versus_fields(n_moods: int, repeat: int = 3) -> tuple[float, float, float]:
    """(CID audit, field comparison, expected CIDs alone), seconds per call for one user."""
    moods, plain = user_data(n_moods)
    with_cids = [PdsRecord(r.rkey, r.value, record_cid(r.value)) for r in plain]
    cid_s = median_seconds(lambda: reconcile(USER, moods, with_cids), repeat)
    fields_s = median_seconds(lambda: reconcile(USER, moods, plain), repeat)
    expected_s = median_seconds(lambda: [expected_cid(m) for m in moods], repeat)
    return cid_s, fields_s, expected_s


def main() -> int:
    small = seconds_per_call(250, 11)
    big = seconds_per_call(2500, 5)
    ratio = big / small
    print(f"reconcile: {small * 1000:.1f} ms per user of 250 moods, {big * 1000:.1f} ms per user of 2,500")
    print(f"ratio big/small={ratio:.1f} (linear about 10; limit {LINEAR_LIMIT})")
    cid_s, fields_s, expected_s = cid_versus_fields(2500)
    print(f"CID audit: {cid_s * 1000:.1f} ms per user of 2,500 moods; field comparison: {fields_s * 1000:.1f} ms "
          f"(median of 3 each; computing the 2,500 expected CIDs alone: {expected_s * 1000:.1f} ms)")
    print(f"ratio cid/fields={cid_s / fields_s:.2f}")
    return 0 if ratio < LINEAR_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
