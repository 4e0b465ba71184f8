"""The cycle collector's pause for bulk work: nested and concurrent pauses
end together, and a collector that was off before stays off."""
import gc
import threading

from app.collector_pause import collector_paused


def test_it_pauses_the_collector_and_runs_it_again_after_the_last_pause():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()


def test_a_pause_ending_in_another_thread_leaves_the_collector_off_while_one_remains():
    inside, leave = threading.Event(), threading.Event()

    def other():
        with collector_paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # the other thread's pause is still on
    leave.set()
    thread.join(10)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_error_in_the_block_still_ends_the_pause():
    try:
        with collector_paused():
            raise ValueError("bad document")
    except ValueError:
        pass
    assert gc.isenabled()
