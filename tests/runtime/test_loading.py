"""Converting the bundled GGUF patches module attributes of `gguf` for its length: two
conversions at once must leave them as they were."""

from __future__ import annotations

import threading

import gguf

from steerguard.runtime.loading import _gguf_read_once


def test_overlapping_conversions_restore_gguf_as_it_was() -> None:
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with _gguf_read_once():
            first_in.set()
            # Unguarded, the second enters now and saves our memoized functions as originals.
            second_in.wait(timeout=1.0)
        first_out.set()

    def second() -> None:
        first_in.wait()
        with _gguf_read_once():
            second_in.set()
            first_out.wait()  # guarded, the first is already out when we get in

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gguf.GGUFReader is reader
    assert gguf.get_tensor_name_map is name_map
