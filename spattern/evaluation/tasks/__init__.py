"""Synthetic long-range tasks: a registry (``TASKS``, ``register_task``, ``get_task``), one example
format and scorer (``registry``), passkey retrieval (``passkey``) and multi-query associative recall
(``mqar``). Importing this package registers both tasks."""

from spattern.evaluation.tasks.registry import (
    TASKS,
    Task,
    TaskExample,
    accuracy_by,
    get_task,
    register_task,
    score_examples,
)
from spattern.evaluation.tasks.passkey import Passkey, evaluate_passkey
from spattern.evaluation.tasks.mqar import (
    MQAR,
    MQARBatch,
    MQARConfig,
    evaluate_mqar,
    mqar_accuracy,
    mqar_batch,
    mqar_batches,
)

__all__ = [
    "MQAR", "MQARBatch", "MQARConfig", "Passkey", "TASKS", "Task", "TaskExample", "accuracy_by", "evaluate_mqar",
    "evaluate_passkey", "get_task", "mqar_accuracy", "mqar_batch", "mqar_batches", "register_task", "score_examples",
]
