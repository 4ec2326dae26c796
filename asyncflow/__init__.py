"""asyncflow: an asyncio-native, embeddable workflow engine.

Layers (a module imports only modules listed before it; `tests/test_layout.py` enforces it and the
README's "Design" section says who owns what):
    L0 leaves    _errors  _settings  events  _identity  _code  _context  _faults  _log
    L1 storage   _formats  _concurrent  _batcher  _local  _backends  _remote  _store  _targets
    L2 model     _registry  _node  _params  _task
    L3 graph     _graph  _fingerprint
    L4 run       _limits  _pool  _records  _leases  _inventory  _emitter  _dask  _execute  _scheduler
    L5 API       _render  _drawing  _report  _select  _results  _progress  _export  _background  _workflow
                 _multi  _map  _catalog
    L6 surface   __init__  _loading  cli  __main__  testing
"""

from . import events as events
from ._background import RunHandle as RunHandle
from ._catalog import Catalog as Catalog
from ._dask import DaskExecutor as DaskExecutor
from ._errors import AsyncflowError as AsyncflowError
from ._errors import CycleError as CycleError
from ._errors import FlowFailed as FlowFailed
from ._errors import MissingInputError as MissingInputError
from ._errors import ParameterError as ParameterError
from ._errors import SerializationError as SerializationError
from ._errors import StorageError as StorageError
from ._errors import TargetError as TargetError
from ._errors import TaskFailed as TaskFailed
from ._formats import Format as Format
from ._map import map as map
from ._multi import WorkflowMulti as WorkflowMulti
from ._node import Node as Node
from ._node import gather as gather
from ._params import depends as depends
from ._results import NodeRecord as NodeRecord
from ._results import Preview as Preview
from ._results import RunResult as RunResult
from ._results import RunStats as RunStats
from ._results import TaskStats as TaskStats
from ._settings import settings as settings
from ._targets import Target as Target
from ._task import Task as Task
from ._task import external as external
from ._task import task as task
from ._workflow import DAG as DAG
from ._workflow import Workflow as Workflow
from ._workflow import run as run

__all__ = [
    "DAG",
    "Catalog",
    "AsyncflowError",
    "CycleError",
    "DaskExecutor",
    "FlowFailed",
    "Format",
    "MissingInputError",
    "Node",
    "NodeRecord",
    "ParameterError",
    "Preview",
    "RunHandle",
    "RunResult",
    "RunStats",
    "SerializationError",
    "StorageError",
    "Target",
    "TargetError",
    "Task",
    "TaskFailed",
    "TaskStats",
    "Workflow",
    "WorkflowMulti",
    "depends",
    "events",
    "external",
    "gather",
    "map",
    "run",
    "settings",
    "task",
]

__version__ = "0.2.0"
