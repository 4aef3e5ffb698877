"""The split of tasks into training and held-out ones."""
import pytest

from llgbm.data.split import resolve_split
from llgbm.data.tasks import Record, Task
from llgbm.infra.errors import LlgbmError


def _task(name: str) -> Task:
    return Task(name, ("0", "1"), (Record("p", "0"),), (Record("q", "0"),))


def test_heldout_tasks_must_be_tasks_and_leave_one_to_train_on() -> None:
    tasks = [_task("first"), _task("last"), _task("largest")]
    split = resolve_split(tasks, ["largest"], None, None, 0)
    assert (split.training, split.heldout) == (("first", "last"), ("largest",))
    with pytest.raises(LlgbmError, match=r"heldout_tasks: \['median'\] are not tasks of the tasks file"):
        resolve_split(tasks, ["median"], None, None, 0)
    with pytest.raises(LlgbmError, match="every task is held out"):
        resolve_split(tasks, ["first", "last", "largest"], None, None, 0)
