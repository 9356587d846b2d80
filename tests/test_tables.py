"""tables: the one number format and table layout the reports share."""

from onnxprune.tables import markdown, num, plain, shorten


def test_num_says_dash_for_missing_or_not_finite():
    assert num(None, ".2f") == "-" and num(float("nan"), ".2f") == "-" and num(float("inf"), ".1f", "x") == "-"
    assert num(1.234, ".2f", "x") == "1.23x" and num(12345, ",") == "12,345"


def test_plain_aligns_text_left_and_numbers_right():
    lines = plain([["name", "ms", "note"], ["a", "1.5", "x"], ["long", "10.25", ""]], left=(0, 2))
    assert lines == ["name     ms  note", "a       1.5  x", "long  10.25"]


def test_markdown_aligns_and_escapes_pipes():
    assert markdown(["a", "b"], [["x|y", "1"]], left=(0,)) == ["| a | b |", "|---|---:|", "| x\\|y | 1 |"]


def test_shorten_cuts_long_names_in_the_middle():
    name = "StatefulPartitionedCall/model/conv2d_3/Conv2D;StatefulPartitionedCall/model/batch_normalization_3/FusedBatchNorm"
    short = shorten(name, 40)
    assert len(short) == 40 and short.startswith("StatefulPartition") and short.endswith("FusedBatchNorm")
    assert "..." in short and shorten("/layer1/conv1/Conv", 40) == "/layer1/conv1/Conv"
