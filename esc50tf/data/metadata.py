"""ESC-50 metadata: reading and validating `meta/esc50.csv`.

The CSV is the single source of truth for labels, folds and recording groups.
Nothing is parsed out of file names, and the folds are whatever the CSV holds
(ESC-50 numbers them 1..5; any integers work).

Example:
>>> meta = load_metadata("ESC-50")          # validates, raises Esc50Error
>>> classes = class_table(meta)             # [{"label": 0, "target": 0, "category": "dog"}, ...]
"""

from __future__ import annotations

import os
from pathlib import Path

from esc50tf.errors import Esc50Error

CSV_RELPATH = os.path.join("meta", "esc50.csv")
AUDIO_DIRNAME = "audio"
REQUIRED_COLUMNS = ("filename", "fold", "target", "category", "src_file", "take")
OPTIONAL_COLUMNS = ("esc10",)
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n", ""}


def csv_path(data_dir):
    return Path(data_dir) / CSV_RELPATH


def audio_dir(data_dir):
    return Path(data_dir) / AUDIO_DIRNAME


def _row(i):
    # Line number in the file: the header is line 1.
    return f"row {i + 2}"


def _as_int(series, column, path):
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise Esc50Error(
            f"{path}: {_row(i)}: column '{column}' must be an integer, "
            f"got {series.iloc[i]!r}"
        )
    return values.astype("int64")


def _as_bool(series, path):
    out = []
    for i, value in enumerate(series):
        text = str(value).strip().lower()
        if text in _TRUE:
            out.append(True)
        elif text in _FALSE or text == "nan":
            out.append(False)
        else:
            raise Esc50Error(
                f"{path}: {_row(i)}: column 'esc10' must be True or False, got {value!r}"
            )
    return out


def _not_utf8(path):
    """Names the first line of `path` that is not UTF-8, and the byte."""
    for number, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            return (f"{path}: row {number}: byte 0x{line[err.start]:02x} at character "
                    f"{err.start + 1} is not UTF-8; save the CSV as UTF-8")
    return f"{path}: not UTF-8; save the CSV as UTF-8"


def read_csv(path):
    """Reads and validates an ESC-50-style metadata CSV.

    Checks: the file parses; the required columns are present; no required
    value is empty; `fold` and `target` are integers, `target` >= 0; each
    target has exactly one category (and each category one target); no
    filename is listed twice.

    Args:
        path: str or path-like. The CSV file.

    Returns:
        A pandas DataFrame with columns `filename, fold, target, category,
        esc10, src_file, take` (str, int64, int64, str, bool, str, str), in
        file order. `df.attrs["has_esc10"]` says whether the column existed.

    Raises:
        Esc50Error: naming the file, the row (file line number) and the problem.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise Esc50Error(f"{path}: metadata CSV not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except UnicodeDecodeError:
        raise Esc50Error(_not_utf8(path)) from None
    except Exception as err:
        raise Esc50Error(f"{path}: cannot parse CSV ({err})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise Esc50Error(
            f"{path}: missing required column(s) {', '.join(missing)}; "
            f"found {', '.join(df.columns) or 'none'}; "
            f"required: {', '.join(REQUIRED_COLUMNS)} (optional: esc10)"
        )
    if len(df) == 0:
        raise Esc50Error(f"{path}: the CSV lists no clips")
    for column in REQUIRED_COLUMNS:
        values = df[column].astype(str).str.strip()
        empty = values == ""
        if empty.any():
            i = int(empty.to_numpy().nonzero()[0][0])
            raise Esc50Error(f"{path}: {_row(i)}: column '{column}' is empty")
        df[column] = values

    out = pd.DataFrame(
        {
            "filename": df["filename"],
            "fold": _as_int(df["fold"], "fold", path),
            "target": _as_int(df["target"], "target", path),
            "category": df["category"],
            "esc10": _as_bool(df["esc10"], path) if "esc10" in df.columns else False,
            "src_file": df["src_file"],
            "take": df["take"],
        }
    )
    out.attrs["has_esc10"] = "esc10" in df.columns

    negative = out["target"] < 0
    if negative.any():
        i = int(negative.to_numpy().nonzero()[0][0])
        raise Esc50Error(
            f"{path}: {_row(i)}: target must be >= 0, got {out['target'].iloc[i]}"
        )
    dup = out["filename"].duplicated(keep="first")
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        first = int((out["filename"] == out["filename"].iloc[i]).to_numpy().nonzero()[0][0])
        raise Esc50Error(
            f"{path}: {_row(i)}: filename {out['filename'].iloc[i]!r} is listed twice "
            f"(first at {_row(first)})"
        )
    for key, other in (("target", "category"), ("category", "target")):
        counts = out.groupby(key)[other].nunique()
        if (counts > 1).any():
            value = counts[counts > 1].index[0]
            value = value.item() if hasattr(value, "item") else value
            seen = sorted(map(str, out.loc[out[key] == value, other].unique()))
            raise Esc50Error(
                f"{path}: {key} {value!r} has more than one {other}: {', '.join(seen)}"
            )
    return out


def check_audio_files(meta, data_dir):
    """Raises Esc50Error listing the clips the CSV names but audio/ lacks."""
    root = audio_dir(data_dir)
    missing = [f for f in meta["filename"] if not (root / f).is_file()]
    if missing:
        shown = ", ".join(str(root / f) for f in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise Esc50Error(
            f"{len(missing)} audio file(s) listed in {csv_path(data_dir)} are missing: "
            f"{shown}{more}"
        )


def load_metadata(data_dir, check_files=True):
    """Reads `DATA_DIR/meta/esc50.csv`, validates it and (optionally) the audio files.

    Args:
        data_dir: str or path-like. Dataset root holding `meta/` and `audio/`.
        check_files: bool. Also require every listed file under `audio/`.
            Defaults to True.

    Returns:
        The validated DataFrame of `read_csv`.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise Esc50Error(f"{data_dir}: dataset folder not found")
    meta = read_csv(csv_path(data_dir))
    if check_files:
        check_audio_files(meta, data_dir)
    return meta


def class_table(meta):
    """The classes in label order: targets sorted, labels 0..C-1.

    ESC-50's targets are already 0..49, so there label == target. A subset
    (e.g. ESC-10, whose targets are not contiguous) gets contiguous labels and
    keeps its original targets alongside.

    Returns:
        A list of dicts `{"label", "target", "category", "esc10"}`.
    """
    rows = (
        meta.groupby("target")
        .agg(category=("category", "first"), esc10=("esc10", "any"))
        .sort_index()
    )
    return [
        {"label": i, "target": int(t), "category": str(r.category), "esc10": bool(r.esc10)}
        for i, (t, r) in enumerate(rows.iterrows())
    ]
