"""Faults a user or the machine can cause, each ending in one named error and nothing lost:
two writers of one folder, a data folder rebuilt under a reader, a full result pipe,
non-finite numbers, damaged manifests and shards, torn backups, a full disk."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from esc50tf.errors import Esc50Error


def _script(tmp_path, body):
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return path


# --- one writer per folder ----------------------------------------------------------------

class _Holder:
    """A second process holding `folder_lock(out, command)` until `release()`."""

    def __init__(self, tmp_path, out, command):
        script = _script(tmp_path, f"""
            import sys, time
            from esc50tf.lock import folder_lock
            with folder_lock({str(out)!r}, {command!r}):
                print("held", flush=True)
                time.sleep(120)
        """)
        self.proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def release(self):
        self.proc.kill()  # as kill -9 would
        self.proc.wait()


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    from esc50tf.lock import folder_lock, lock_path

    out = tmp_path / "runs" / "a"
    holder = _Holder(tmp_path, out, "train --out a")
    try:
        with pytest.raises(Esc50Error, match=rf"pid {holder.pid}: train --out a"):
            with folder_lock(out, "train"):
                pass
    finally:
        holder.release()
    # The holder died (kill -9): its lock file stays, but the kernel dropped the lock.
    assert lock_path(out).exists()
    with folder_lock(out, "train"):
        assert f"pid {os.getpid()}: train" in lock_path(out).read_text()
    assert not lock_path(out).exists()


def test_the_lock_is_reentrant_and_outlives_the_folder(tmp_path):
    from esc50tf.lock import folder_lock, lock_path

    out = tmp_path / "new" / "run"
    with folder_lock(out, "tune"):
        out.mkdir()
        with folder_lock(out, "train"):  # tune training into its own folder
            pass
        assert lock_path(out).exists()
        out.rmdir()  # a command replacing its folder keeps the lock
        assert lock_path(out).exists()
    assert not (tmp_path / "new").exists()  # the parent it made is removed again


def test_two_builds_into_one_folder_one_is_refused(tiny_esc50, tmp_path):
    from esc50tf.data.tfrecords import BuildConfig, build_tfrecords

    out = tmp_path / "tfr"
    holder = _Holder(tmp_path, out, "build-tfrecords --out tfr")
    try:
        with pytest.raises(Esc50Error, match=r"another esc50tf is writing .*build-tfrecords"):
            build_tfrecords(tiny_esc50, out, BuildConfig(sample_rate=8000, clip_seconds=1.0),
                            workers=1, progress=False, log=lambda _: None)
    finally:
        holder.release()
    assert not out.exists()


# --- worker pools -------------------------------------------------------------------------

def test_the_build_pool_stops_with_its_result_pipe_full(tmp_path):
    """The consumer fails while workers are blocked writing 8 MB results into the pipe:
    the stream still ends at once, and no worker process is left."""
    script = _script(tmp_path, """
        import os, time
        import multiprocessing as mp
        from esc50tf.data.tfrecords import _decoded_stream

        def big(job):
            return job, b"x" * (8 << 20)

        if __name__ == "__main__":
            stream = _decoded_stream(list(range(64)), 2, decode=big)
            try:
                for n, _ in enumerate(stream):
                    if n == 2:
                        time.sleep(1.0)  # the workers fill the pipe meanwhile
                        raise OSError(28, "No space left on device")
            except OSError:
                stream.close()  # as _write_shards does, whatever the error
            print("children", len(mp.active_children()), flush=True)
    """)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "children 0" in done.stdout


def test_build_workers_are_capped(tiny_esc50, tmp_path):
    from esc50tf.data.tfrecords import BuildConfig, build_tfrecords

    manifest = build_tfrecords(tiny_esc50, tmp_path / "tfr",
                               BuildConfig(sample_rate=8000, clip_seconds=1.0),
                               workers=1000, progress=False, log=lambda _: None)
    assert manifest["build"]["workers"] <= min(os.cpu_count(), 40)
    assert not list((tmp_path / "tfr").glob(".esc50tf-staging-*"))
