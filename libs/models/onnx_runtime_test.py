"""How the ONNX scorer cuts texts into batches (no model needed)."""

from libs.models.onnx_runtime import length_groups


def test_a_batch_closes_when_full_or_when_the_next_text_would_pad_its_shortest_beyond_the_slack() -> None:
    lengths = [40, 10, 12, 100, 11, 13, 90, 41]
    groups = length_groups(lengths, batch_size=3, slack=0.25)
    assert groups == [[1, 4, 2], [5], [0, 7], [6, 3]]  # 10,11,12 | 13 (full) | 40,41 | 90,100
    assert sorted(row for group in groups for row in group) == list(range(len(lengths)))


def test_texts_of_one_length_fill_whole_batches() -> None:
    assert length_groups([7] * 5, batch_size=2) == [[0, 1], [2, 3], [4]]
    assert length_groups([], batch_size=4) == []
