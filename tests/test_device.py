"""cvdl.device: one call picks the device, one call seeds everything."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import cvdl
from cvdl import device as dev


def test_default_order_is_cuda_mps_cpu(monkeypatch):
    monkeypatch.delenv("CVDL_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if dev._mps_available() else "cpu"
    assert cvdl.get_device().type == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cvdl.get_device().type == "cuda"  # CUDA wins whenever present
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert cvdl.get_device().type == "mps"
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert cvdl.get_device().type == "cpu"


def test_forcing_a_device(monkeypatch):
    assert cvdl.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("CVDL_DEVICE", "cpu")
    assert cvdl.get_device() == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device must be one of \('cuda', 'mps', 'cpu'\).*got 'tpu'"):
        cvdl.get_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda' was asked for but is not available here; available: .*cpu"):
        cvdl.get_device("cuda")


def test_describe_device_names_it():
    assert cvdl.describe_device("cpu").startswith("cpu — ")


def test_seed_everything_makes_runs_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist(), torch.nn.Linear(4, 2).weight.sum().item()

    cvdl.seed_everything(123)
    a = draw()
    cvdl.seed_everything(123)
    assert draw() == a
    cvdl.seed_everything(124)
    assert draw() != a
    for bad in (-1, 1.5, "7", True):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            cvdl.seed_everything(bad)
