"""Strategy tests run tiny models, where intra-op threads cost more than they save (and backward
passes contend badly with a busy machine): one thread here, restored afterwards."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
