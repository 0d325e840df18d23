"""Registers the toy model and loss of ``toys.py`` with fernb's public decorators, as a user's plugin module would:
for subprocesses (``python -m fernb train --import toys_plugin``, ``torchrun``, kill-and-resume scripts)."""

from toys import TOY, ToyLoss, engine_toy

from fernb.losses import register_loss
from fernb.models import register_model

register_model(engine_toy)
register_loss(TOY)(ToyLoss)
