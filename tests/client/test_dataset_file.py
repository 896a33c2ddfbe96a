"""The .npy file a synthesized dataset is written to, and its progress file: which rows are in
it, how the missing ones are split over shards, and when it may be continued."""

import json

import numpy as np
import pytest

from vae_client._dataset_file import (
    DatasetFile,
    DatasetParameters,
    ResumeRefused,
    Span,
    progress_path,
    split,
)

PARAMETERS = DatasetParameters(count=10, dtype="uint8", seed=7, temperature=0.5)


def rows(start: int, stop: int) -> np.ndarray:
    return np.full((stop - start, 28, 28), start, np.uint8)


def test_split_cuts_the_pending_rows_into_even_contiguous_runs() -> None:
    assert split([(0, 10)], 3) == [[Span(0, 3, 0)], [Span(3, 6, 3)], [Span(6, 10, 6)]]
    assert split([(2, 5), (8, 10), (12, 15)], 2) == [
        [Span(2, 5, 2), Span(8, 9, 8)], [Span(9, 10, 9), Span(12, 15, 12)]
    ]
    assert split([(4, 5)], 2) == [[], [Span(4, 5, 4)]]


def test_a_new_file_is_full_size_and_its_progress_file_lists_every_row_as_pending(
    tmp_path,
) -> None:
    path = tmp_path / "digits.npy"
    DatasetFile.create(path, PARAMETERS, shards=2)
    assert np.load(path).shape == (10, 28, 28) and np.load(path).dtype == np.uint8
    assert json.loads(progress_path(path).read_text()) == {
        "count": 10, "dtype": "uint8", "seed": 7, "temperature": 0.5, "model_version": None,
        "pending": [{"start": 0, "stop": 5, "done": 0}, {"start": 5, "stop": 10, "done": 5}],
    }
    with pytest.raises(ResumeRefused, match="digits.npy exists: add --resume"):
        DatasetFile.create(path, PARAMETERS, shards=1)


def test_resuming_splits_only_the_rows_not_checkpointed_over_the_new_shards(tmp_path) -> None:
    path = tmp_path / "digits.npy"
    dataset = DatasetFile.create(path, PARAMETERS, shards=2)
    first, second = dataset.shards
    dataset.write(first[0], 0, rows(0, 2), "1")
    dataset.write(second[0], 5, rows(5, 9), "1")
    dataset.checkpoint()
    dataset.write(first[0], 2, rows(2, 3), "1")  # Written, but not yet recorded.
    resumed = DatasetFile.resume(path, 3, count=None, dtype=None, seed=None, temperature=None)
    assert (resumed.parameters, resumed.model_version, resumed.rows_done) == (PARAMETERS, "1", 6)
    assert resumed.shards == [[Span(2, 3, 2)], [Span(3, 4, 3)], [Span(4, 5, 4), Span(9, 10, 9)]]
    np.testing.assert_array_equal(np.load(path)[5:9], rows(5, 9))


def test_a_finished_dataset_has_no_progress_file_and_cannot_be_resumed(tmp_path) -> None:
    path = tmp_path / "digits.npy"
    dataset = DatasetFile.create(path, PARAMETERS, shards=1)
    dataset.write(dataset.shards[0][0], 0, rows(0, 10), "1")
    dataset.complete()
    assert not progress_path(path).exists()
    with pytest.raises(ResumeRefused, match="has no digits.npy.progress: it is complete"):
        DatasetFile.resume(path, 1, count=None, dtype=None, seed=None, temperature=None)


@pytest.mark.parametrize(("given", "message"), [
    ({"count": 11}, "begun with --count 10, not 11"),
    ({"dtype": "float32"}, "begun with --dtype uint8, not float32"),
    ({"seed": 8}, "begun with --seed 7, not 8"),
    ({"temperature": 0.7}, "begun with --temperature 0.5, not 0.7"),
])
def test_resuming_with_other_parameters_is_refused(tmp_path, given, message) -> None:
    path = tmp_path / "digits.npy"
    DatasetFile.create(path, PARAMETERS, shards=1)
    same = {"count": 10, "dtype": "uint8", "seed": 7, "temperature": 0.5}
    assert DatasetFile.resume(path, 1, **same).parameters == PARAMETERS
    with pytest.raises(ResumeRefused, match=message):
        DatasetFile.resume(path, 1, **{**same, **given})


def test_rows_of_another_model_version_are_refused_unwritten(tmp_path) -> None:
    path = tmp_path / "digits.npy"
    dataset = DatasetFile.create(path, PARAMETERS, shards=2)
    dataset.write(dataset.shards[0][0], 0, rows(0, 5), "1")
    with pytest.raises(ResumeRefused, match="holds rows of model version '1', but rows from 5"):
        dataset.write(dataset.shards[1][0], 5, rows(5, 10), "2")
    assert dataset.rows_done == 5
    assert not np.load(path)[5:].any()
