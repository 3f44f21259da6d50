"""What two cores give two processes side by side, as a ceiling for the batch speed-up (RESULTS §10).

The same single-threaded work runs in one process alone, then in two processes at once; the ratio
is the throughput of two over one (2.0 = the second core is as fast as the first):

* ``python``: an interpreted loop (no memory traffic);
* ``small``: numpy on a 16 KB array (stays in the core's cache);
* ``memory``: numpy streaming through 256 MB arrays (bound by the memory bandwidth).

    python benchmarks/bench_two_cores.py [python small memory ...]
"""

import os
import sys
import time
from multiprocessing import Process, Queue

os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np  # noqa: E402  (after the thread count)


def interpreted():
    total = 0
    for i in range(30_000_000):
        total += i * i


def in_cache():
    a = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    for _ in range(200_000):
        a = np.sin(a)


def streaming():
    a = np.ones(32_000_000)
    for _ in range(40):
        a = a * 1.0000001 + 1.0


KINDS = {"python": interpreted, "small": in_cache, "memory": streaming}


def work(queue, kind):
    start = time.perf_counter()
    KINDS[kind]()
    queue.put(time.perf_counter() - start)


def timed(n, kind) -> list:
    queue = Queue()
    processes = [Process(target=work, args=(queue, kind)) for _ in range(n)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    return [queue.get() for _ in processes]


def main():
    kinds = sys.argv[1:] or list(KINDS)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        sys.exit(f"unknown kind(s) {', '.join(sorted(unknown))}: choose from {', '.join(KINDS)}")
    for kind in kinds:
        alone = timed(1, kind) + timed(1, kind)
        both = timed(2, kind)
        print(f"{kind}: alone {alone[0]:.2f} s, {alone[1]:.2f} s; two at once {both[0]:.2f} s, {both[1]:.2f} s; "
              f"throughput of two over one {2 * np.mean(alone) / np.mean(both):.2f}x", flush=True)


if __name__ == "__main__":
    main()
