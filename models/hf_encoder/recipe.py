"""How long to train and how to weight classes, decided from the training data's size and class balance.

``train_steps`` sets a budget in optimiser updates: the epoch count becomes what reaches it, between
``min_epochs`` and ``epochs`` (then the most epochs), so a small set gets enough updates and a large one is
not over-trained. ``class_weight: auto`` weights classes ``balanced`` when the largest training class is
more than 1.5 times the smallest (``mlops.core.class_balance``). Both choices are logged with their reason and
recorded in the run's runtime facts (``recipe``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from mlops.core.class_balance import resolve_class_weight

logger = logging.getLogger(__name__)


def plan_epochs(args, n_rows: int, world: int = 1) -> tuple[int, dict[str, Any]]:
    """The epochs to run for ``n_rows`` training rows, and what was decided and why."""
    batches = math.ceil(n_rows / args.batch_size)
    if world > 1:
        batches //= world
    updates = max(1, math.ceil(batches / args.gradient_accumulation_steps))
    if args.train_steps is None:
        epochs, reason = args.epochs, "training_arguments.epochs"
    else:
        wanted = math.ceil(args.train_steps / updates)
        epochs = min(args.epochs, max(args.min_epochs, wanted))
        bound = (" (capped by epochs)" if wanted > args.epochs else " (raised to min_epochs)"
                 if wanted < args.min_epochs else "")
        reason = f"train_steps {args.train_steps} at {updates} updates per epoch{bound}"
    plan = {"epochs": epochs, "updates_per_epoch": updates, "planned_updates": epochs * updates,
            "epochs_reason": reason}
    logger.info("training plan: up to %d epochs x %d updates = %d updates (%s)", epochs, updates, epochs * updates,
                reason)
    return epochs, plan


def plan_training(args, labels: list[str], y: np.ndarray, world: int = 1):
    """``args`` with the epochs and class weights this training set gets, and the record of why."""
    epochs, plan = plan_epochs(args, len(y), world)
    class_weight, plan["class_weight_reason"] = resolve_class_weight(args.class_weight, labels, y)
    logger.info("class weights: %s (%s)", class_weight or "none", plan["class_weight_reason"])
    plan["class_weight"] = class_weight
    return args.model_copy(update={"epochs": epochs, "class_weight": class_weight}), plan
