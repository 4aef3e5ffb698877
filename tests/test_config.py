import re

import pytest

from llgbm.config import Config, config_from_dict, load_config
from llgbm.errors import LlgbmError


def test_defaults_are_valid() -> None:
    cfg = config_from_dict({})
    assert isinstance(cfg, Config)
    assert cfg.lambda_schedule in ("constant", "linear", "cosine")


def test_repository_params_load() -> None:
    cfg = load_config("params.yaml")
    assert len(cfg.tasks.names) >= 8
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("raw, fragment", [
    ({"lambda_dleta": 1.0}, "unknown key 'lambda_dleta'"),
    ({"teachers": {"stpes": 3}}, "unknown key 'teachers.stpes'"),
    ({"probes": {"types": ["generic", "oracle"]}}, "'probes.types' is 'oracle'"),
    ({"delta_loss_type": "huber"}, "'delta_loss_type' is 'huber'"),
    ({"lambda_schedule": "step"}, "'lambda_schedule' is 'step'"),
    ({"lora": {"rank": "four"}}, "'lora.rank' must be int"),
    ({"tasks": {"names": ["first", "nonsense"]}}, "'tasks.names' is 'nonsense'"),
    ({"probe_count": 0}, "'probe_count' must be > 0"),
    ({"evaluate": {"probe_count": 0}}, "'evaluate.probe_count' must be > 0"),
    ({"tasks": {"source": "files"}}, "'tasks.files' is empty"),
    ({"train": {"max_grad_norm": 0}}, "'train.max_grad_norm' must be > 0"),
    ({"delta_reduce": "median"}, "'delta_reduce' is 'median'"),
    ({"delta_layers": "middle"}, "'delta_layers' is 'middle'"),
    ({"delta_layers": [-1]}, "'delta_layers' is [-1]"),
    ({"delta_layers": []}, "'delta_layers' is []"),
    ({"train": {"mixed_precision": "fp16"}}, "'train.mixed_precision' fp16 is not supported"),
])
def test_bad_params_name_the_key(raw: dict, fragment: str) -> None:
    with pytest.raises(LlgbmError, match=re.escape(fragment)) as info:
        config_from_dict(raw, "params.yaml")
    assert str(info.value).startswith("params.yaml: ")
    assert "\n" not in str(info.value)


def test_delta_variants_are_accepted() -> None:
    assert config_from_dict({"delta_reduce": "per_probe", "delta_layers": [0, 1]}).delta_layers == [0, 1]
    assert config_from_dict({"delta_layers": "all", "probes": {"per_task": True}}).probes.per_task


def test_missing_params_file(tmp_path) -> None:
    with pytest.raises(LlgbmError, match="params file not found"):
        load_config(tmp_path / "params.yaml")


COMPOSITIONAL_HELDOUT = ["smallest_plus_two", "smallest_minus_four", "second_smallest_mirror", "median_plus_five",
                         "median_minus_one", "second_largest_plus_one", "second_largest_plus_four", "largest_minus_three"]


def test_compositional_family_with_supported_heldout_pairs() -> None:
    from llgbm.config import builtin_task_names, compositional_pairs, unsupported_heldout

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
