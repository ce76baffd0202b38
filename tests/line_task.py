"""A tiny training task for tests of the shared loop: y = 3x - 1 regression."""

import torch
from torch.utils.data import TensorDataset


class LineTask:
    """y = 3x - 1 regression: small enough to check the loop's bookkeeping."""

    def __init__(self, crash_at_epoch=None):
        self.crash_at_epoch = crash_at_epoch

    def build_model(self):
        return torch.nn.Linear(1, 1)

    def loss(self, model, batch, epoch):
        if epoch == self.crash_at_epoch:
            raise KeyboardInterrupt("killed")
        x, y = batch
        loss = torch.nn.functional.mse_loss(model(x), y)
        return loss, {"loss": loss.item()}

    def validate(self, model, loader):
        err = sum(float(torch.nn.functional.mse_loss(model(x), y)) for x, y in loader)
        return {"mse": err, "score": -err}

    def checkpoint_extra(self):
        return {"family": "line"}


def line_data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=g)
    return TensorDataset(x, 3 * x - 1)
