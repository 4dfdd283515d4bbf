"""esc50tf.progress: bars on a terminal, plain lines (no escape codes) anywhere else."""

import io

from esc50tf import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_in_a_log_is_plain_lines_with_its_last_line_once():
    log = io.StringIO()
    with progress.bar(total=500, desc="embed", unit="clip", stream=log, mininterval=0) as bar:
        for _ in range(500):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("embed:") for line in lines)
    assert sum("500/500" in line for line in lines) == 1  # the final state, once
    assert len(lines) == len(set(lines))


def test_a_bar_in_a_log_is_quiet_between_intervals():
    log = io.StringIO()
    with progress.bar(total=100, desc="x", stream=log) as bar:  # LOG_INTERVAL_S apart
        for _ in range(100):
            bar.update(1)
    assert [line.split("|")[0].split()[-1] for line in log.getvalue().splitlines()] == [
        "0%", "100%"]


def test_a_bar_on_a_terminal_is_tqdms_own():
    tty = _Terminal()
    with progress.bar(total=3, desc="x", stream=tty, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert "\r" in tty.getvalue()


def test_keras_progress_bars_only_on_a_terminal():
    assert progress.keras_verbose(1, io.StringIO()) == 2
    assert progress.keras_verbose(1, _Terminal()) == 1
    assert progress.keras_verbose(0, io.StringIO()) == 0
    assert progress.keras_verbose(2, _Terminal()) == 2


def test_train_writes_no_escape_codes_into_a_log(tiny_tfrecords, tmp_path, capfd):
    """Keras' own bar (verbose=1) writes ANSI colours whatever the output; off a terminal
    train prints one plain line per epoch instead."""
    from esc50tf.cli import main

    assert main(["train", "--model", "cnn_small", "--data", str(tiny_tfrecords), "--out",
                 str(tmp_path / "run"), "--test-fold", "1", "--epochs", "2", "--batch-size", "8",
                 "--n-fft", "256", "--hop-length", "64", "--n-mels", "32"]) == 0
    out, err = capfd.readouterr()
    assert "\x1b[" not in out and "\x1b[" not in err
    assert "Epoch 2/2" in out and "━" not in out
