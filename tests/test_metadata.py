"""meta/esc50.csv validation: every problem named with its file and row."""

import pytest

from esc50tf.data.metadata import class_table, load_metadata, read_csv
from esc50tf.errors import Esc50Error

from conftest import rows_for, write_dataset

HEADER = "filename,fold,target,category,esc10,src_file,take\n"
GOOD = "a.wav,1,0,dog,True,100,A\nb.wav,2,1,rain,False,101,A\n"


def _csv(tmp_path, text):
    path = tmp_path / "esc50.csv"
    path.write_text(text)
    return path


def test_valid_csv_types(tmp_path):
    df = read_csv(_csv(tmp_path, HEADER + GOOD))
    assert list(df.columns) == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    assert df["fold"].tolist() == [1, 2]
    assert df["esc10"].tolist() == [True, False]
    assert df.attrs["has_esc10"]


def test_esc10_is_optional(tmp_path):
    df = read_csv(_csv(tmp_path, "filename,fold,target,category,src_file,take\na.wav,1,0,dog,100,A\n"))
    assert df["esc10"].tolist() == [False]
    assert not df.attrs["has_esc10"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("filename,fold,target,category,esc10\na.wav,1,0,dog,True\n", "missing required column(s) src_file, take"),
        (HEADER + GOOD + "a.wav,3,0,dog,True,102,A\n", "row 4: filename 'a.wav' is listed twice (first at row 2)"),
        (HEADER + GOOD + "c.wav,3,0,cat,True,102,A\n", "target 0 has more than one category: cat, dog"),
        (HEADER + GOOD + "c.wav,3,5,dog,True,102,A\n", "category 'dog' has more than one target"),
        (HEADER + "a.wav,one,0,dog,True,100,A\n", "row 2: column 'fold' must be an integer, got 'one'"),
        (HEADER + "a.wav,1,0.5,dog,True,100,A\n", "row 2: column 'target' must be an integer"),
        (HEADER + "a.wav,1,-1,dog,True,100,A\n", "row 2: target must be >= 0"),
        (HEADER + GOOD + "c.wav,1,0,dog,True,,A\n", "row 4: column 'src_file' is empty"),
        (HEADER + "a.wav,1,0,dog,maybe,100,A\n", "column 'esc10' must be True or False"),
        (HEADER, "lists no clips"),
        ('filename,fold\n"a.wav,1\n', "cannot parse CSV"),
    ],
)
def test_invalid_csv_is_named(tmp_path, text, needle):
    path = _csv(tmp_path, text)
    with pytest.raises(Esc50Error) as err:
        read_csv(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_missing_csv_and_folder(tmp_path):
    with pytest.raises(Esc50Error, match="dataset folder not found"):
        load_metadata(tmp_path / "nope")
    with pytest.raises(Esc50Error, match="metadata CSV not found"):
        load_metadata(tmp_path)


def test_missing_audio_files_are_listed(tmp_path):
    write_dataset(tmp_path, rows_for([1, 2]))
    (tmp_path / "audio" / "clip_100_A.wav").unlink()
    with pytest.raises(Esc50Error) as err:
        load_metadata(tmp_path)
    assert "1 audio file(s)" in str(err.value)
    assert "clip_100_A.wav" in str(err.value)
    # Without the file check the CSV alone still loads.
    assert len(load_metadata(tmp_path, check_files=False)) == 8


def test_any_fold_numbering_and_contiguous_labels(tmp_path):
    rows = rows_for([0, 7, 9])
    for r in rows:  # non-contiguous targets, as in ESC-10
        r["target"] = {0: 10, 1: 3}[r["target"]]
        r["category"] = f"class{r['target']}"
    write_dataset(tmp_path, rows)
    meta = load_metadata(tmp_path)
    assert sorted(meta["fold"].unique()) == [0, 7, 9]
    classes = class_table(meta)
    assert [(c["label"], c["target"]) for c in classes] == [(0, 3), (1, 10)]
