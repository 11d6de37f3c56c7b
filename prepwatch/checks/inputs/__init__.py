"""Inputs: the normalization contract of model inputs, captured at training, guarded at serving.

``watch.inputs()`` returns the :class:`InputMonitor` component (metrics
``prepwatch_input_*``, rules ``alerts/inputs.rules.yml``, dashboard
``dashboards/inputs.json``, docs ``docs/inputs.md``). ``served``/``correct`` and
``MISTAKES`` reproduce the common serving mistakes, to test a guard or a pipeline.
"""

from prepwatch.checks.inputs.capture import infer_layout
from prepwatch.checks.inputs.contract import InputContract, Recorded, contract_path
from prepwatch.checks.inputs.declared import Declared
from prepwatch.checks.inputs.faults import MISTAKES, Mistake, correct, served
from prepwatch.checks.inputs.guard import GuardResult
from prepwatch.checks.inputs.model import NormalizedModel
from prepwatch.checks.inputs.monitor import InputContractError, InputMonitor
from prepwatch.checks.inputs.stats import VIOLATION_KINDS

__all__ = [
    "MISTAKES",
    "VIOLATION_KINDS",
    "Declared",
    "GuardResult",
    "InputContract",
    "InputContractError",
    "InputMonitor",
    "Mistake",
    "NormalizedModel",
    "Recorded",
    "contract_path",
    "correct",
    "infer_layout",
    "served",
]
