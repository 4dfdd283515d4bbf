"""Every measured figure in the README comes from a committed result file.

A table or paragraph of figures in README.md follows a marker line

    <!-- figures: benchmarks/results/NAME.json -->
    <!-- figures: tests/test_x.py CONSTANT ... -->
    <!-- figures: FILE; settings: 2,000 5 128 -->

naming the file its numbers come from (a benchmark's JSON report, or named
constants of a test module that asserts them). Every number of the block
must be found in that file at the precision the README prints it: in a
table, every number of the body except the row labels (first column); in a
paragraph, every number except those inside backticks and the settings the
marker lists (sizes and rates that describe the run rather than measure it).
"n of m" must be a pair of the file. A figure edited by hand, or left behind
when its result file was rerun, fails here. A limit: a one- or two-digit
figure can match some other value of a large file by chance; a figure printed
with three significant digits or more practically cannot.
"""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- figures: (\S+)((?: [A-Z_]+)*)(?:; settings: ([^>]*))? -->")
# 1,234 / 12.5 / 1.7e-4 are numbers; a hyphen between two numbers is a range; the
# digits of names (cnn14, int16) and versions (0.10.2) are not numbers.
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?(?:e-?\d+)?)(?![\w.]*\d)")
PAIR = re.compile(r"(\d+) of (\d+)")
# A README figure may be the source's value as a percentage, or in other units:
# minutes or hours of seconds, milliseconds of seconds, MB of bytes.
SCALES = (1.0, 100.0, 1 / 60, 1 / 3600, 1000.0, 1e-3, 1e-6, 2.0**-20)


def marked_blocks(text=None):
    """[(source, constants, settings, kind, lines)] for each marker of the README."""
    lines = (README.read_text() if text is None else text).splitlines()
    blocks = []
    for i, line in enumerate(lines):
        m = MARKER.fullmatch(line.strip())
        if not m:
            assert "<!-- figures" not in line, f"README line {i + 1}: malformed marker {line!r}"
            continue
        body = []
        for following in lines[i + 1:]:
            if not following.strip():
                break
            body.append(following)
        assert body, f"README line {i + 1}: a marker with nothing under it"
        kind = "table" if body[0].lstrip().startswith("|") else "paragraph"
        settings = [] if m.group(3) is None else NUMBER.findall(m.group(3))
        blocks.append((m.group(1), m.group(2).split(), settings, kind, body))
    return blocks


def figures(kind, body, settings):
    """The strings of the numbers a block claims, and its "n of m" pairs."""
    if kind == "table":
        rows = [r for r in body[2:]]  # header and the |---| line are not figures
        cells = [c for r in rows for c in r.strip().strip("|").split("|")[1:]]
        text = " ".join(cells)
    else:
        text = " ".join(body)
    text = re.sub(r"`[^`]*`", " ", text)
    pairs = [(int(a), int(b)) for a, b in PAIR.findall(text)]
    numbers = NUMBER.findall(text)
    for s in settings:
        if s in numbers:
            numbers.remove(s)
    return numbers, pairs


def source_values(path, constants):
    """Every number the source holds (numbers inside its strings too), and its pairs."""
    numbers, pairs = [], set()

    def walk(value):
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            numbers.append(float(value))
        elif isinstance(value, str):
            numbers.extend(float(n.replace(",", "")) for n in NUMBER.findall(value))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            if len(value) == 2 and all(isinstance(v, int) for v in value):
                pairs.add(tuple(value))
            for v in value:
                walk(v)

    if path.suffix == ".json":
        assert not constants, f"{path}: constants name parts of a Python module"
        walk(json.loads(path.read_text()))
    else:
        assert constants, f"{path}: name the module's constants that hold the figures"
        found = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                found[node.targets[0].id] = node.value
        for name in constants:
            assert name in found, f"{path}: no constant {name}"
            walk(ast.literal_eval(found[name]))
    return numbers, pairs


def matches(figure, values):
    """Whether README text `figure` is one of `values` at the precision it is printed."""
    text = figure.replace(",", "")
    r = float(text)
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    half = 0.5 * 10.0 ** (int(exponent or 0) - decimals)
    return any(abs(abs(v) * scale - r) <= half * (1 + 1e-9) for v in values for scale in SCALES)


def check_block(source, constants, settings, kind, body):
    """The figures of one block missing from its source: [(figure, line)]."""
    path = ROOT / source
    assert path.is_file(), f"README names {source}, which is not committed"
    values, pairs = source_values(path, constants)
    missing = []
    numbers, claimed_pairs = figures(kind, body, settings)
    for n in numbers:
        if not matches(n, values):
            line = next((b for b in body if n in b), "")
            missing.append((n, line.strip()))
    missing += [(f"{a} of {b}", "") for a, b in claimed_pairs if (a, b) not in pairs]
    return missing


def test_the_readme_marks_its_figures():
    blocks = marked_blocks()
    sources = {b[0] for b in blocks}
    # Each committed result the README quotes is named at least once.
    for name in ("bench_pipeline-full-cpu.json", "bench_frontend-full-cpu.json",
                 "bench_train-full-cpu.json", "bench_export-full-cpu.json",
                 "recipe_experiment-full-cpu.json", "device_check-quick-cpu.json",
                 "bench_train-quick-cpu.json", "panns_parity-full-cpu.json",
                 "check_real_clips-esc50-sample.json"):
        assert f"benchmarks/results/{name}" in sources, name
    assert "tests/test_timeline.py" in sources


@pytest.mark.parametrize("block", marked_blocks(), ids=lambda b: f"{b[0]}:{b[4][0][:30]}")
def test_each_figure_is_in_its_result_file(block):
    source, constants, settings, kind, body = block
    assert not check_block(source, constants, settings, kind, body)


def test_a_figure_edited_by_hand_fails(tmp_path):
    """The check itself: a number not in the file, or printed more precisely, is caught."""
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"results": [{"clips_per_s": 505.04, "ratio": 23.689,
                                               "epoch_s": 72.4, "note": "about 3.4 s",
                                               "found": [6, 10]}]}))
    readme = ("<!-- figures: r.json; settings: 2,000 -->\n"
              "On 2,000 clips: 505 clips/s, 23.7x, 3.4 s, 1.2 min, 6 of 10 (`--clips 7`).\n\n")
    ((_, constants, settings, kind, body),) = marked_blocks(readme)
    values, pairs = source_values(result, constants)
    numbers, claimed = figures(kind, body, settings)
    assert numbers == ["505", "23.7", "3.4", "1.2", "6", "10"] and claimed == [(6, 10)]
    assert all(matches(n, values) for n in numbers) and set(claimed) <= pairs
    assert not matches("506", values) and not matches("23.8", values)
    assert not matches("505.1", values)  # more digits than the file holds: not the file's
    assert matches("50.5", [0.505])  # a percentage of a fraction
    _, claimed = figures("paragraph", ["7 of 10"], [])
    assert not set(claimed) <= pairs
