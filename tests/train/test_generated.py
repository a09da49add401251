"""blobs-120k: the generated large-batch workload is fixed, noisy only where it should be."""

from __future__ import annotations

import torch

from looksam.train.runner import RunConfig, run_training
from looksam.train.workloads import create_workload
from looksam.train.workloads.generated import generated_classification


def test_same_data_every_time_with_exactly_the_asked_label_noise() -> None:
    (x, y), (x_test, y_test) = generated_classification(2_000, 500, 8, 4, noise=0.25)
    (x2, y2), _ = generated_classification(2_000, 500, 8, 4, noise=0.25)
    assert torch.equal(x, x2)
    assert torch.equal(y, y2)
    assert x.shape == (2_000, 8)
    assert x_test.shape == (500, 8)
    assert x.dtype == torch.float32
    assert y.dtype == torch.long
    (_, clean), (_, test_clean) = generated_classification(2_000, 500, 8, 4, noise=0.0)
    assert int((clean != y).sum()) == 500  # a quarter of the training labels, each truly changed
    assert torch.equal(test_clean, y_test)  # test labels are never flipped
    assert torch.allclose(x.mean(dim=0), torch.zeros(8), atol=1e-5)  # standardised on train


def test_blobs_takes_batches_in_the_thousands() -> None:
    workload = create_workload("blobs-120k")
    assert workload.num_train_examples == 120_000
    result = run_training(
        RunConfig(workload="blobs-120k", optimizer="sgd", batch_size=8192, max_steps=3,
                  device="cpu"),
        workload=workload,
    )  # fmt: skip
    assert result.status == "ok"
    assert result.steps == 3
