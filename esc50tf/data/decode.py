"""Decoding a dataset's clips in worker processes, and flagging the suspicious ones.

`esc50tf build-tfrecords` decodes every clip through `decoded_stream` (a
spawn-based process pool that leaves no worker behind however the stream
ends) and records what `find_issues` flags in the manifest.
"""

from __future__ import annotations

import itertools
import multiprocessing
import signal

from esc50tf import cleanup
from esc50tf.data import audio as audio_lib
from esc50tf.errors import Esc50Error

# Suspicious but decodable clips (recorded in the manifest; --strict refuses them).
ISSUE_KINDS = ("silent", "constant", "clipped", "sample_rate", "duplicate")
# A clip is "clipped" when this share of its samples sits at full scale, all through it.
CLIPPED_SHARE = 0.01
# A file's rate is far off when it differs from the collection's usual rate by more
# than this factor (22050 in a 44100 Hz collection is; 48000 is not).
RATE_FACTOR = 1.5


def _decode_job(job):
    """Worker: decode one clip. Returns (position, pcm bytes or None, error or None, stats or None)."""
    position, path, sample_rate, num_samples = job
    try:
        pcm, stats = audio_lib.load_clip(path, sample_rate, num_samples, with_stats=True)
        return position, pcm.astype("<i2").tobytes(), None, stats
    except Esc50Error as err:
        return position, None, str(err), None
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad clip
        return position, None, f"{path}: cannot decode audio ({type(err).__name__}: {err})", None


def _ignore_interrupts():
    # Workers leave Ctrl-C to the parent, which stops them; a terminal sends
    # SIGINT to the whole process group, and a worker dying of it mid-task
    # would leave the pool waiting for a result that never comes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decoded_stream(jobs, workers, decode=None):
    """Yields decode results in job order, using a spawn-based process pool.

    At most a few results per worker are in flight, and the pool's own thread
    keeps reading the workers' results while it shuts down, so however the
    stream ends (exhausted, closed early, an error, Ctrl-C) nothing blocks on a
    full result pipe: queued jobs are cancelled, running ones finish (one clip
    each), and the worker processes are gone when it returns.

    Args:
        jobs: list of job tuples for `decode`.
        workers: int. Processes (1, or fewer than 4 jobs: decode in this process).
        decode: picklable callable job -> result. Defaults to `_decode_job`.
    """
    import collections
    import concurrent.futures

    decode = decode or _decode_job
    if workers <= 1 or len(jobs) < 4:
        for job in jobs:
            yield decode(job)
        return
    # spawn, not fork: the parent has TensorFlow loaded, which is not fork-safe.
    ctx = multiprocessing.get_context("spawn")
    # multiprocessing's resource tracker, started lazily by the pool's first lock,
    # unblocks SIGINT in this thread once it is up, so workers spawned after it would
    # start with Ctrl-C deliverable (and die of it while importing): start it first.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    with cleanup.interrupts_deferred():  # workers start with Ctrl-C blocked (kept across exec)
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                                      initializer=_ignore_interrupts)
    pending = collections.deque()
    todo = iter(jobs)
    try:
        with cleanup.interrupts_deferred():
            for job in itertools.islice(todo, 4 * workers):
                pending.append(pool.submit(decode, job))
        while pending:
            try:
                result = pending.popleft().result()
            except concurrent.futures.process.BrokenProcessPool:
                raise Esc50Error(
                    "a decoding worker process died (killed, or out of memory); nothing was "
                    "written; retry with fewer --workers") from None
            job = next(todo, None)
            if job is not None:
                pending.append(pool.submit(decode, job))
            yield result
    finally:
        with cleanup.interrupts_deferred():
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def find_issues(checked):
    """Flags decodable but suspicious clips (ISSUE_KINDS).

    Args:
        checked: list of `(filename, clip_stats dict, sha1 of the stored PCM)`
            in build order.

    Returns:
        A list of `{"filename", "kind", "detail"}`, in build order.
    """
    from collections import Counter

    issues = []
    rates = Counter(stats["sample_rate"] for _, stats, _ in checked)
    usual = rates.most_common(1)[0][0] if rates else None
    first_of = {}
    for filename, stats, digest in checked:
        def flag(kind, detail, filename=filename):
            issues.append({"filename": filename, "kind": kind, "detail": detail})

        if stats["silent"]:
            flag("silent", "every sample is zero")
        elif stats["constant"]:
            flag("constant", "every sample has the same value (no sound)")
        elif digest in first_of:
            flag("duplicate", f"the same audio as {first_of[digest]}")
        else:
            first_of[digest] = filename
        if stats["clipped_share"] >= CLIPPED_SHARE:
            flag("clipped", f"{100 * stats['clipped_share']:.1f}% of samples at full scale, "
                            "all through the clip")
        rate = stats["sample_rate"]
        if max(rate, usual) > RATE_FACTOR * min(rate, usual):
            flag("sample_rate", f"recorded at {rate} Hz; most clips are at {usual} Hz")
    return issues


def describe_issues(issues, limit=10):
    """Lines for a log: one per issue (up to `limit`), then how many more."""
    lines = [f"{i['filename']}: {i['kind']}: {i['detail']}" for i in issues[:limit]]
    if len(issues) > limit:
        lines.append(f"... and {len(issues) - limit} more (see manifest.json, `issues`)")
    return lines


def strict_message(issues, where):
    kinds = ", ".join(f"{n} {k}" for k in ISSUE_KINDS
                      if (n := sum(i["kind"] == k for i in issues)))
    return (f"{where}: --strict: {len(issues)} suspicious clip(s) ({kinds}); nothing was "
            "written:\n  " + "\n  ".join(describe_issues(issues))
            + "\nfix or remove them, or build without --strict to keep and record them")
