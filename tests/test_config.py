import re
from pathlib import Path

import pytest
import yaml

from llgbm.config import Config, config_from_dict, load_config
from llgbm.infra.errors import LlgbmError


def test_defaults_are_valid() -> None:
    cfg = config_from_dict({})
    assert isinstance(cfg, Config)
    assert cfg.lambda_schedule in ("constant", "linear", "cosine")


def test_repository_params_load() -> None:
    cfg = load_config("params.yaml")
    assert len(cfg.tasks.names) >= 8
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("raw, fragment", [
    ({"lambda_dleta": 1.0}, "unknown key 'lambda_dleta' (did you mean 'lambda_delta'?)"),
    ({"teachers": {"stpes": 3}}, "unknown key 'teachers.stpes' (did you mean 'teachers.steps'?)"),
    ({"probes": {"types": ["generic", "oracle"]}}, "'probes.types' is 'oracle'"),
    ({"delta_loss_type": "huber"}, "'delta_loss_type' is 'huber'"),
    ({"lambda_schedule": "step"}, "'lambda_schedule' is 'step'"),
    ({"lora": {"rank": "four"}}, "'lora.rank' must be int"),
    ({"tasks": {"names": ["first", "nonsense"]}}, "'tasks.names' is 'nonsense'"),
    ({"encoder": {"model": "factors"}, "tasks": {"family": "eight"}, "heldout_folds": None},
     "'encoder.model' 'factors' needs the built-in compositional family"),
    ({"probe_count": 0}, "'probe_count' must be > 0"),
    ({"evaluate": {"probe_count": 0}}, "'evaluate.probe_count' must be > 0"),
    ({"tasks": {"source": "files"}}, "'tasks.files' is empty"),
    ({"train": {"max_grad_norm": 0}}, "'train.max_grad_norm' must be > 0"),
    ({"delta_reduce": "median"}, "'delta_reduce' is 'median'"),
    ({"delta_layers": "middle"}, "'delta_layers' is 'middle'"),
    ({"delta_layers": [-1]}, "'delta_layers' is [-1]"),
    ({"delta_layers": []}, "'delta_layers' is []"),
    ({"train": {"mixed_precision": "fp16"}}, "'train.mixed_precision' fp16 is not supported"),
    ({"loss_balance": "grad_norm", "train": {"lambda_weights_decay_steps": 100}}, "'loss_balance' grad_norm scales the behaviour term"),
    ({"loss_balance": "none", "lambda_delta": 0.0, "train": {"lambda_weights_decay_steps": 100}},
     "'train.lambda_weights_decay_steps' hands over to a behaviour term"),
    ({"validation_tasks": -1}, "'validation_tasks' must be >= 0"),
    ({"validation_tasks": 6}, "validation_tasks: 6 asked for, but only 6 tasks are not held out"),
])
def test_bad_params_name_the_key(raw: dict, fragment: str) -> None:
    with pytest.raises(LlgbmError, match=re.escape(fragment)) as info:
        config_from_dict(raw, "params.yaml")
    assert str(info.value).startswith("params.yaml: ")
    assert "\n" not in str(info.value)


def test_an_unknown_key_far_from_every_name_gets_no_suggestion() -> None:
    with pytest.raises(LlgbmError) as info:
        config_from_dict({"qwerty": 3}, "params.yaml")
    assert str(info.value) == "params.yaml: unknown key 'qwerty'"


def test_delta_variants_are_accepted() -> None:
    assert config_from_dict({"delta_reduce": "per_probe", "delta_layers": [0, 1]}).delta_layers == [0, 1]
    assert config_from_dict({"delta_layers": "all", "probes": {"per_task": True}}).probes.per_task


def test_missing_params_file(tmp_path) -> None:
    with pytest.raises(LlgbmError, match="params file not found"):
        load_config(tmp_path / "params.yaml")


COMPOSITIONAL_HELDOUT = ["smallest_plus_two", "smallest_minus_four", "second_smallest_mirror", "median_plus_five",
                         "median_minus_one", "second_largest_plus_one", "second_largest_plus_four", "largest_minus_three"]


def test_compositional_family_with_supported_heldout_pairs() -> None:
    from llgbm.data.split import unsupported_heldout
    from llgbm.data.tasks import builtin_task_names, compositional_pairs

    cfg = config_from_dict({"tasks": {"family": "compositional"}, "heldout_tasks": COMPOSITIONAL_HELDOUT,
                            "base": {"pretrain_primitive_share": 0.5}})
    assert len(builtin_task_names(cfg.tasks)) == 50
    pairs = compositional_pairs(["first", "last"], ["same", "mirror"])
    assert pairs == {"first_same": ("first", "same"), "first_mirror": ("first", "mirror"),
                     "last_same": ("last", "same"), "last_mirror": ("last", "mirror")}
    assert unsupported_heldout(pairs, ["first_same"]) == []
    # Holding out both pairs of 'first' leaves the selector unseen in training.
    assert unsupported_heldout(pairs, ["first_same", "first_mirror"]) == ["first_same", "first_mirror"]


@pytest.mark.parametrize("raw, fragment", [
    ({"tasks": {"family": "nine"}}, "'tasks.family' is 'nine'"),
    ({"tasks": {"family": "compositional", "selectors": ["first", "middle"]}, "heldout_tasks": []},
     "'tasks.selectors' is 'middle'"),
    ({"tasks": {"family": "compositional"}, "heldout_tasks": ["third"]}, "'heldout_tasks' names ['third']"),
    ({"tasks": {"family": "compositional", "selectors": ["first", "last"], "transforms": ["same", "mirror"]},
      "heldout_tasks": ["first_same", "first_mirror"]}, "'heldout_tasks' ['first_same', 'first_mirror'] lack compositional support"),
    ({"base": {"pretrain_primitive_share": 0.5}}, "'base.pretrain_primitive_share' needs tasks.family 'compositional'"),
    ({"tasks": {"family": "compositional"}, "heldout_tasks": [], "base": {"pretrain_primitive_share": 1.5}},
     "'base.pretrain_primitive_share' must be in [0, 1]"),
])
def test_bad_family_params_name_the_key(raw: dict, fragment: str) -> None:
    import re

    with pytest.raises(LlgbmError, match=re.escape(fragment)) as info:
        config_from_dict(raw, "params.yaml")
    assert "\n" not in str(info.value)


def test_training_subsets_keep_support_and_nest() -> None:
    from llgbm.data.split import select_training_names
    from llgbm.data.tasks import compositional_pairs

    pairs = compositional_pairs(["smallest", "median", "largest"], ["plus_one", "plus_two", "minus_one", "mirror"])
    names = list(pairs)
    heldout = ["smallest_plus_one", "median_mirror", "largest_minus_one"]
    previous: set[str] = set()
    for count in (3, 5, 7, 9):
        chosen = select_training_names(names, heldout, count, pairs, seed=0)
        assert len(chosen) == count and not set(chosen) & set(heldout)
        assert chosen == [n for n in names if n in chosen]  # in the tasks' own order
        assert {pairs[n][0] for n in chosen} >= {pairs[h][0] for h in heldout}
        assert {pairs[n][1] for n in chosen} >= {pairs[h][1] for h in heldout}
        assert previous <= set(chosen)  # a larger count keeps every task of a smaller one
        previous = set(chosen)
    assert select_training_names(names, heldout, 5, pairs, seed=0) == select_training_names(names, heldout, 5, pairs, seed=0)
    assert select_training_names(names, heldout, 5, pairs, seed=0) != select_training_names(names, heldout, 5, pairs, seed=1)
    assert select_training_names(names, heldout, None, pairs, seed=0) == [n for n in names if n not in heldout]
    with pytest.raises(LlgbmError, match="max_training_tasks: 2 training tasks cannot keep"):
        select_training_names(names, heldout, 2, pairs, seed=0)
    with pytest.raises(LlgbmError, match="max_training_tasks: 10 asked for, only 9"):
        select_training_names(names, heldout, 10, pairs, seed=0)


def test_max_training_tasks_is_checked_against_the_family(tmp_path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    path = tmp_path / "params.yaml"
    params.update(max_training_tasks=6)  # the compositional default's fold 0: 10 held-out pairs use all 10 transforms
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(LlgbmError, match="params.yaml: max_training_tasks: 6 .* needs at least 10"):
        load_config(path)
    params.update(max_training_tasks=10)
    path.write_text(yaml.safe_dump(params))
    assert load_config(path).max_training_tasks == 10
    params.update(max_training_tasks=1, heldout_tasks=["third", "before_last"], heldout_folds=None)
    params["tasks"]["family"] = "eight"
    params["base"]["pretrain_primitive_share"] = 0.0
    path.write_text(yaml.safe_dump(params))
    cfg = load_config(path)  # the eight family: no parts to keep
    assert cfg.max_training_tasks == 1
    params.update(max_training_tasks=0)
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(LlgbmError, match="'max_training_tasks' must be > 0"):
        load_config(path)
    params.update(max_training_tasks="six")
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(LlgbmError, match="'max_training_tasks' must be int"):
        load_config(path)


def test_folds_hold_out_every_pair_once_each_with_support() -> None:
    from llgbm.config import heldout_names
    from llgbm.data.split import unsupported_heldout
    from llgbm.data.tasks import builtin_task_names, compositional_pairs

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    names = builtin_task_names(config_from_dict(raw).tasks)
    pairs = compositional_pairs(raw["tasks"]["selectors"], raw["tasks"]["transforms"])
    folds = [heldout_names(config_from_dict({**raw, "heldout_folds": 5, "heldout_fold": k}), names) for k in range(5)]
    assert sorted(n for fold in folds for n in fold) == sorted(names)  # disjoint, and together every pair
    for fold in folds:
        assert len(fold) == 10 and not unsupported_heldout(pairs, fold)
        assert {pairs[n][0] for n in fold} == set(raw["tasks"]["selectors"])  # each selector, 2 transforms each
    eight = ["smallest_plus_two", "median_minus_one"]
    assert config_from_dict({**raw, "heldout_folds": None, "heldout_tasks": eight}).heldout_tasks == eight
    with pytest.raises(LlgbmError, match="params.yaml: 'heldout_tasks' and 'heldout_folds' are both set"):
        config_from_dict({**raw, "heldout_folds": 5, "heldout_tasks": eight})  # the list would be ignored
    with pytest.raises(LlgbmError, match="params.yaml: heldout_fold: 5, expected 0 to 4"):
        config_from_dict({**raw, "heldout_folds": 5, "heldout_fold": 5})
    with pytest.raises(LlgbmError, match="heldout_folds: 1, expected 2 to 50"):
        config_from_dict({**raw, "heldout_folds": 1})
