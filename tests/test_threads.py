"""The core's thread pool: ordered results, the thread count from OMP_NUM_THREADS, no deadlock
when a task itself maps."""

import threading

from napari_aet.threads import map_threads, thread_count


def test_results_come_in_item_order_on_several_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    names = set()

    def square(x):
        names.add(threading.current_thread().name)
        return x * x

    assert map_threads(square, range(50)) == [x * x for x in range(50)]
    assert thread_count() == 2
    assert names and all(name.startswith("napari-aet") for name in names)


def test_omp_num_threads_1_runs_in_the_calling_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert map_threads(lambda _: threading.current_thread().name, range(4)) == [threading.current_thread().name] * 4


def test_a_task_that_maps_again_runs_its_inner_map_serially(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    def inner(x):
        return map_threads(lambda y: (y, threading.current_thread().name), range(3))

    for result in map_threads(inner, range(4)):  # would deadlock if the inner maps waited for the pool
        assert [y for y, _ in result] == [0, 1, 2]
        assert len({name for _, name in result}) == 1


def test_a_forked_child_maps_on_threads_of_its_own(monkeypatch):
    """The parent's pool threads do not exist in a forked child; reusing that pool would hang."""
    import multiprocessing

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert map_threads(abs, [-1, -2]) == [1, 2]  # the parent's pool exists now
    child = multiprocessing.get_context("fork").Process(target=map_threads, args=(abs, [-1, -2, -3]))
    child.start()
    child.join(timeout=20)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung and child.exitcode == 0
