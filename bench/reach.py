"""How long a revocation takes to reach a path: the bench's reach figures, directly and through nginx."""

import itertools
import time
from collections.abc import Callable, Iterator

import requests

SAMPLES = 20
REFUSALS_IN_A_ROW = 20


def revocation_reach(session: requests.Session, check_url: str, revoker_url: str, spare: Iterator[int],
                     secret: Callable[[int], str], checks_first: int) -> list[float]:
    """Seconds from a revocation's answer until check_url refuses the key, for SAMPLES spare keys.

    Each key is first checked at check_url checks_first times (so that every cache on the way
    holds it), then revoked with itself at revoker_url; check_url is asked again and again until
    it has refused the key REFUSALS_IN_A_ROW times in a row, and the reach is when its last
    acceptance came back. Seeded key n has the id n + 1.
    """
    reaches = []
    for index in itertools.islice(spare, SAMPLES):
        headers = {"x-api-key": secret(index)}
        for _ in range(checks_first):
            session.get(check_url, headers=headers, timeout=10).raise_for_status()
        requests.delete(f"{revoker_url}/auth/keys/{index + 1}", headers=headers, timeout=10).raise_for_status()
        revoked_at = last_accepted = time.perf_counter()
        refusals = 0
        while refusals < REFUSALS_IN_A_ROW:
            if session.get(check_url, headers=headers, timeout=10).status_code == 200:
                refusals, last_accepted = 0, time.perf_counter()
            else:
                refusals += 1
        reaches.append(last_accepted - revoked_at)
    return reaches
