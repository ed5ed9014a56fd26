"""The churn beside the hot workload: a second client revoking keys at a steady rate."""

import threading
import time
from collections.abc import Iterator

import requests

from .seed import bench_secret
from .servers import LiveServer

REVOCATIONS_PER_SECOND = 10


class Revoker:
    """A second client that revokes spare keys, each with itself, at a steady rate while it runs."""

    def __init__(self, server: LiveServer, spare: Iterator[int]) -> None:
        self.server = server
        self.spare = spare
        self.revoked = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> "Revoker":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()

    def run(self) -> None:
        """Revoke one key every 1/REVOCATIONS_PER_SECOND seconds until stopped or out of keys."""
        with requests.Session() as session:
            next_at = time.monotonic()
            for index in self.spare:
                if self.stopping.wait(max(0.0, next_at - time.monotonic())):
                    return
                next_at += 1 / REVOCATIONS_PER_SECOND
                answer = session.delete(f"{self.server.url}/auth/keys/{index + 1}",  # seeded ids start at 1
                                        headers={"x-api-key": bench_secret(index)}, timeout=10)
                answer.raise_for_status()
                self.revoked += 1
