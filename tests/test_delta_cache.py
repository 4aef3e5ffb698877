import shutil

import pytest
import torch
from transformers import AutoConfig

from llgbm.artifacts.adapters import ADAPTER_WEIGHTS, load_adapter_tensors
from llgbm.artifacts.base_model import load_base, load_tokenizer
from llgbm.artifacts.delta_cache import DeltaCache
from llgbm.core.delta import DeltaComputer, DeltaSpec
from llgbm.core.lora import lora_layout, lora_scaling, stack_adapters
from llgbm.data.probes import answer_prompts, tokenize_probes
from llgbm.infra.errors import LlgbmError
from llgbm.infra.io import read_json, sha256_file
from llgbm.recipes.deltas import delta_geometry, fill_cache

from .conftest import checkpoint_dirs, micro_config, micro_probe_set, micro_training


def _cached_deltas(cache_dir) -> dict[str, torch.Tensor]:
    cache = DeltaCache.load(cache_dir)
    return {e["adapter"]: cache.get(k) for k, e in cache.entries.items()}


def test_cache_holds_every_checkpoint_delta(micro, tmp_path) -> None:
    cfg = micro["cfg"]
    metrics = fill_cache(cfg, micro["tasks"], micro_training(cfg, micro["tasks"]), micro["base"], micro["teachers"], tmp_path / "cache")
    index = read_json(micro["teachers"] / "index.json", "index")["checkpoints"]
    assert metrics["computed"] == len(index) == 6 and metrics["reused"] == 0
    cached = _cached_deltas(tmp_path / "cache")
    tokenizer = load_tokenizer(micro["base"])
    probes = micro_probe_set(cfg, micro["tasks"], tokenizer)
    assert DeltaCache.load(tmp_path / "cache").probes == probes  # the probe set travels with the cache
    layout = lora_layout(AutoConfig.from_pretrained(micro["base"]), cfg.lora)
    computer = DeltaComputer(load_base(micro["base"]), layout, lora_scaling(cfg.lora), *tokenize_probes(probes, tokenizer))
    for entry in index:
        adapter = load_adapter_tensors(micro["teachers"] / entry["path"], layout, cfg.lora)
        with torch.no_grad():
            expected = computer(stack_adapters([adapter]))[0]
        torch.testing.assert_close(cached[entry["path"]], expected, rtol=1e-6, atol=1e-6)


def test_rerun_reuses_and_repairs_entries(micro, tmp_path) -> None:
    cfg, cache_dir = micro["cfg"], tmp_path / "cache"
    fill_cache(cfg, micro["tasks"], micro_training(cfg, micro["tasks"]), micro["base"], micro["teachers"], cache_dir)
    before = _cached_deltas(cache_dir)
    assert fill_cache(cfg, micro["tasks"], micro_training(cfg, micro["tasks"]),
                      micro["base"], micro["teachers"], cache_dir)["computed"] == 0
    # What a kill leaves behind: a stray temporary file, a lost entry, a truncated entry.
    files = sorted((cache_dir / "entries").glob("*.safetensors"))
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:20])
    (cache_dir / "entries" / ".half-written.safetensors.tmp").write_bytes(b"x")
    metrics = fill_cache(cfg, micro["tasks"], micro_training(cfg, micro["tasks"]), micro["base"], micro["teachers"], cache_dir)
    assert (metrics["computed"], metrics["reused"]) == (2, 4)
    assert not list(cache_dir.rglob("*.tmp"))
    after = _cached_deltas(cache_dir)
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key])


def test_new_probe_set_invalidates_the_cache(micro, tmp_path) -> None:
    cache_dir = tmp_path / "cache"
    fill_cache(micro["cfg"], micro["tasks"], micro_training(micro["cfg"], micro["tasks"]), micro["base"], micro["teachers"], cache_dir)
    old_files = set((cache_dir / "entries").glob("*"))
    metrics = fill_cache(micro_config(probe_count=3), micro["tasks"], micro_training(micro_config(probe_count=3),
                         micro["tasks"]), micro["base"], micro["teachers"], cache_dir)
    assert metrics["computed"] == 6 and metrics["probes"] == 3
    assert not old_files & set((cache_dir / "entries").glob("*"))  # stale entries pruned


def test_two_runs_give_identical_deltas(micro, tmp_path) -> None:
    fill_cache(micro["cfg"], micro["tasks"], micro_training(micro["cfg"], micro["tasks"]), micro["base"], micro["teachers"], tmp_path / "a")
    fill_cache(micro["cfg"], micro["tasks"], micro_training(micro["cfg"], micro["tasks"]), micro["base"], micro["teachers"], tmp_path / "b")
    a, b = _cached_deltas(tmp_path / "a"), _cached_deltas(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_adapter_fails_naming_the_file(micro, tmp_path) -> None:
    teachers = tmp_path / "teachers"
    shutil.copytree(micro["teachers"], teachers)
    broken = sorted(teachers.glob("*/step-*"))[-1] / ADAPTER_WEIGHTS
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(LlgbmError, match="cannot read adapter weights") as info:
        fill_cache(micro["cfg"], micro["tasks"], micro_training(micro["cfg"], micro["tasks"]), micro["base"], teachers, tmp_path / "cache")
    assert str(broken) in str(info.value)


def test_delta_geometry_on_a_hand_made_case() -> None:
    deltas = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    geometry = delta_geometry(deltas, ["a", "a", "b"])
    assert geometry["cosine_within_task"] == pytest.approx(1.0)
    assert geometry["cosine_between_tasks"] == pytest.approx(0.0)
    assert geometry["delta_norm_mean"] == pytest.approx(4.0 / 3.0)


def test_entries_of_another_delta_definition_are_recomputed(micro, tmp_path, monkeypatch, capsys) -> None:
    import llgbm.artifacts.delta_cache as delta_cache_module

    cache_dir = tmp_path / "cache"
    fill_cache(micro["cfg"], micro["tasks"], micro_training(micro["cfg"], micro["tasks"]), micro["base"], micro["teachers"], cache_dir)
    # What editing llgbm/delta.py (e.g. how it reduces over probes) does to the code fingerprint.
    monkeypatch.setattr(delta_cache_module, "code_fingerprint", lambda *modules: "edited delta code")
    metrics = fill_cache(micro["cfg"], micro["tasks"], micro_training(micro["cfg"], micro["tasks"]),
                         micro["base"], micro["teachers"], cache_dir)
    assert (metrics["computed"], metrics["reused"]) == (6, 0)
    assert "another definition (library code changed); starting fresh" in capsys.readouterr().out
    assert DeltaCache.load(cache_dir).definition["code"] == "edited delta code"
    assert len(list((cache_dir / "entries").glob("*.safetensors"))) == 6  # the old entries are pruned


def test_definition_records_dtype_precision_and_scaling_and_is_checked(micro, tmp_path) -> None:
    from llgbm.artifacts.delta_cache import delta_definition

    cfg = micro["cfg"]
    fill_cache(cfg, micro["tasks"], micro_training(cfg, micro["tasks"]), micro["base"], micro["teachers"], tmp_path / "cache")
    cache = DeltaCache.load(tmp_path / "cache")
    scaling = lora_scaling(cfg.lora)
    assert (cache.definition["dtype"], cache.definition["precision"], cache.definition["scaling"]) == ("float32", "no", scaling)
    seed = DeltaSpec()
    answers = answer_prompts(micro["tasks"], cfg.kl.prompts, cfg.kl.top_k, cfg.kl.seed)
    cache.check_definition(delta_definition("float32", "no", scaling, seed, answers))
    # Each named in words a user can act on: an edited task file changes the KL reference's prompts, which
    # no `kl` param says.
    for other, differs in ((("bfloat16", "no", scaling, seed, answers), "base.dtype"),
                           (("float32", "bf16", scaling, seed, answers), "train.mixed_precision"),
                           (("float32", "no", 0.5, seed, answers), "the LoRA scaling"),
                           (("float32", "no", scaling, DeltaSpec("per_probe"), answers),
                            r"the delta variant \(delta_reduce, delta_layers\)"),
                           (("float32", "no", scaling, seed, answer_prompts(micro["tasks"][1:], 3, 0, 0)),
                            r"the KL reference's prompts \(drawn from the tasks' records\) or kl params")):
        with pytest.raises(LlgbmError, match=rf"another definition \({differs} differs\)"):
            cache.check_definition(delta_definition(*other))


@pytest.mark.parametrize("variant", [{"delta_reduce": "per_probe"}, {"delta_layers": "all"}])
def test_each_variant_is_cached_under_its_own_key(micro, tmp_path, variant) -> None:
    cache_dir = tmp_path / "cache"
    fill_cache(micro["cfg"], micro["tasks"], micro_training(micro["cfg"], micro["tasks"]), micro["base"], micro["teachers"], cache_dir)
    seed_keys = set(DeltaCache.load(cache_dir).entries)
    metrics = fill_cache(micro_config(**variant), micro["tasks"], micro_training(micro_config(**variant),
                         micro["tasks"]), micro["base"], micro["teachers"], cache_dir)
    assert (metrics["computed"], metrics["reused"]) == (6, 0)
    cache = DeltaCache.load(cache_dir)
    assert not seed_keys & set(cache.entries)
    probes = len(cache.probes.texts)
    expected = (probes, 32) if variant.get("delta_reduce") == "per_probe" else (2 * 32,)
    assert cache.delta_shape == expected
    assert all(tuple(cache.get(k).shape) == expected for k in cache.entries)


def test_training_precision_delta_of_a_teacher_matches_its_cache_entry(micro, tmp_path) -> None:
    """Under bf16 autocast (as training runs on a GPU) with activation checkpointing, a teacher's own weight
    tokens, detokenised as the generator's are, reproduce its cached delta: L_delta is ~0 at the teacher."""
    from llgbm.core.losses import DeltaLoss
    from llgbm.core.precision import frozen_base_dtype
    from llgbm.core.weight_tokens import WeightTokenizer

    cfg = micro_config(train={**micro_config().train.__dict__, "mixed_precision": "bf16"})
    fill_cache(cfg, micro["tasks"], micro_training(cfg, micro["tasks"]), micro["base"], micro["teachers"], tmp_path / "bf16")
    fill_cache(micro["cfg"], micro["tasks"], micro_training(micro["cfg"], micro["tasks"]),
               micro["base"], micro["teachers"], tmp_path / "fp32")
    bf16, fp32 = DeltaCache.load(tmp_path / "bf16"), DeltaCache.load(tmp_path / "fp32")
    assert bf16.definition["precision"] == "bf16"
    assert bf16.definition["dtype"] == frozen_base_dtype(cfg.base.dtype, "bf16") == "bfloat16"  # as training loads it
    tokenizer = load_tokenizer(micro["base"])
    layout = lora_layout(AutoConfig.from_pretrained(micro["base"]), cfg.lora)
    weight_tokenizer = WeightTokenizer(layout, cfg.generator.chunk_width)
    computer = DeltaComputer(load_base(micro["base"], "bfloat16"), layout, lora_scaling(cfg.lora),
                             *tokenize_probes(bf16.probes, tokenizer), autocast_dtype=torch.bfloat16,
                             gradient_checkpointing=True)
    directory = checkpoint_dirs(micro["teachers"])[0]
    tokens, scales = weight_tokenizer.tokenize(stack_adapters([load_adapter_tensors(directory, layout, cfg.lora)]))
    tokens.requires_grad_(True)
    delta = computer(weight_tokenizer.detokenize(tokens, scales))  # with grad, as in training
    key = bf16.key_for(sha256_file(directory / ADAPTER_WEIGHTS))
    target_bf16 = bf16.get(key)
    target_fp32 = fp32.get(fp32.key_for(sha256_file(directory / ADAPTER_WEIGHTS)))
    loss = DeltaLoss("mse")(delta, target_bf16[None])
    scale = target_bf16.square().mean()
    assert loss.item() <= 1e-6 * scale.item()
    # What the cache used to be on a GPU: fp32 targets against a bf16 training delta do not give 0.
    assert DeltaLoss("mse")(delta, target_fp32[None]).item() > 100 * loss.item()


def test_kl_targets_are_the_teachers_answer_distributions_through_peft(micro, tmp_path) -> None:
    """The cached KL target of a checkpoint is its PEFT-loaded model's next-token distribution after each
    of its task's answer prompts; with kl.top_k, the top k of it plus the rest's mass."""
    from llgbm.artifacts.adapters import load_peft_model
    from llgbm.core.delta import binned_log_probs

    cfg = micro["cfg"]
    fill_cache(cfg, micro["tasks"], micro_training(cfg, micro["tasks"]), micro["base"], micro["teachers"], tmp_path / "full")
    top = micro_config(kl={"top_k": 3})
    fill_cache(top, micro["tasks"], micro_training(top, micro["tasks"]), micro["base"], micro["teachers"], tmp_path / "top")
    full_cache, top_cache = DeltaCache.load(tmp_path / "full"), DeltaCache.load(tmp_path / "top")
    tokenizer = load_tokenizer(micro["base"])
    answers = answer_prompts(micro["tasks"], cfg.kl.prompts, 0, cfg.kl.seed)
    directory = checkpoint_dirs(micro["teachers"])[0]
    task = directory.parent.name
    ids, mask = answers.batch([task], tokenizer)
    model = load_peft_model(load_base(micro["base"]), directory)
    with torch.no_grad():
        logits = model(input_ids=ids[0], attention_mask=mask[0]).logits
    expected = torch.log_softmax(logits[torch.arange(len(ids[0])), mask[0].sum(-1) - 1].float(), dim=-1)
    sha = sha256_file(directory / ADAPTER_WEIGHTS)
    target, top_ids = full_cache.get_kl(full_cache.key_for(sha))
    assert top_ids is None and target.shape == expected.shape
    torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-5)
    binned, top_ids = top_cache.get_kl(top_cache.key_for(sha))
    assert top_ids.shape == (cfg.kl.prompts, 3) and binned.shape == (cfg.kl.prompts, 4)
    torch.testing.assert_close(top_ids, expected.topk(3, dim=-1).indices)
    torch.testing.assert_close(binned, binned_log_probs(expected, top_ids), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(binned.exp().sum(-1), torch.ones(cfg.kl.prompts))


def test_kl_at_a_teachers_own_tokens_is_zero(micro, tmp_path) -> None:
    """Training's KL path (batched hooks, each adapter its own prompts) at a teacher's own weight tokens
    reproduces the cached target: KL(teacher || generated) = 0, full and top-k."""
    from llgbm.core.losses import kl_divergence
    from llgbm.core.weight_tokens import WeightTokenizer

    for name, cfg in (("full", micro["cfg"]), ("top", micro_config(kl={"top_k": 3}))):
        fill_cache(cfg, micro["tasks"], micro_training(cfg, micro["tasks"]), micro["base"], micro["teachers"], tmp_path / name)
        cache = DeltaCache.load(tmp_path / name)
        tokenizer = load_tokenizer(micro["base"])
        layout = lora_layout(AutoConfig.from_pretrained(micro["base"]), cfg.lora)
        weight_tokenizer = WeightTokenizer(layout, cfg.generator.chunk_width)
        computer = DeltaComputer(load_base(micro["base"]), layout, lora_scaling(cfg.lora),
                                 *tokenize_probes(cache.probes, tokenizer), gradient_checkpointing=True)
        answers = answer_prompts(micro["tasks"], cfg.kl.prompts, cfg.kl.top_k, cfg.kl.seed)
        directories = checkpoint_dirs(micro["teachers"])[:2]
        tokens, scales = weight_tokenizer.tokenize(stack_adapters([load_adapter_tensors(d, layout, cfg.lora)
                                                                    for d in directories]))
        targets = [cache.get_kl(cache.key_for(sha256_file(d / ADAPTER_WEIGHTS))) for d in directories]
        ids, mask = answers.batch([d.parent.name for d in directories], tokenizer)
        top_ids = torch.stack([t[1] for t in targets]) if cfg.kl.top_k else None
        predicted = computer.answer_log_probs(weight_tokenizer.detokenize(tokens.requires_grad_(True), scales),
                                              ids, mask, top_ids)
        assert kl_divergence(torch.stack([t[0] for t in targets]), predicted).item() < 1e-6, name
