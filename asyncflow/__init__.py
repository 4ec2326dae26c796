"""asyncflow: an asyncio-native, embeddable workflow engine.

Layers (a module imports only from layers below it; see README "Design"):
    L0 leaves     _errors  _settings  events  _identity  _context
    L1 model      _formats  _node  <-  _task
    L2 storage    _store  <-  _targets
    L3 planning   _graph
    L4 execution  _execute  <-  _scheduler
    L5 API        _render  <-  _workflow
    L6 surface    __init__  __main__
"""

from . import events as events
from ._errors import (
    AsyncflowError as AsyncflowError,
    CycleError as CycleError,
    FlowFailed as FlowFailed,
    MissingInputError as MissingInputError,
    ParameterError as ParameterError,
    SerializationError as SerializationError,
    StorageError as StorageError,
    TargetError as TargetError,
    TaskFailed as TaskFailed,
)
from ._formats import Format as Format
from ._node import Node as Node, gather as gather
from ._settings import settings as settings
from ._targets import Target as Target
from ._task import Task as Task, depends as depends, external as external, task as task
from ._workflow import (
    DAG as DAG,
    NodeRecord as NodeRecord,
    Preview as Preview,
    RunResult as RunResult,
    Workflow as Workflow,
    WorkflowMulti as WorkflowMulti,
    run as run,
)

__all__ = [
    "DAG",
    "AsyncflowError",
    "CycleError",
    "FlowFailed",
    "Format",
    "MissingInputError",
    "Node",
    "NodeRecord",
    "ParameterError",
    "Preview",
    "RunResult",
    "SerializationError",
    "StorageError",
    "Target",
    "TargetError",
    "Task",
    "TaskFailed",
    "Workflow",
    "WorkflowMulti",
    "depends",
    "events",
    "external",
    "gather",
    "run",
    "settings",
    "task",
]

__version__ = "0.1.0"
