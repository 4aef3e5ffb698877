import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from llgbm.artifacts.adapters import load_adapter_tensors
from llgbm.artifacts.base_model import load_base
from llgbm.core.delta import DeltaComputer, DeltaSpec, delta_spec, layer_scales, reduce_delta
from llgbm.core.lora import LoraConfig, batched_lora_forward, layout_of_model, lora_scaling, stack_adapters
from llgbm.infra.errors import LlgbmError
from llgbm.testing import peft_delta

# The seed's delta and its variants (the random base has the micro base's 2 layers).
SPECS = [DeltaSpec(), DeltaSpec("per_probe"), DeltaSpec("mean", (0, 1), normalise=True),
         DeltaSpec("per_probe", (0,), normalise=True)]


def _setup(random_base, spec: DeltaSpec = DeltaSpec()):
    cfg, layout = random_base["cfg"], random_base["layout"]
    ids, mask = random_base["probe_ids"], random_base["probe_mask"]
    computer = DeltaComputer(load_base(random_base["base"]), layout, lora_scaling(cfg.lora), ids, mask, spec=spec)
    adapters = [load_adapter_tensors(d, layout, cfg.lora) for d in random_base["adapters"]]
    return computer, adapters, ids, mask


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.reduce}-{s.layers}")
def test_batched_delta_matches_peft(random_base, spec: DeltaSpec) -> None:
    computer, adapters, ids, mask = _setup(random_base, spec)
    assert len(set(mask.sum(-1).tolist())) > 1, "probes of unequal length exercise the padding"
    with torch.no_grad():
        deltas = computer(stack_adapters(adapters))
    assert deltas.shape[1:] == spec.shape(len(ids), 32)
    for directory, delta in zip(random_base["adapters"][:3], deltas):
        expected = peft_delta(random_base["base"], directory, ids, mask, spec)
        assert expected.norm() > 1e-3
        assert (delta - expected).norm() / expected.norm() < 1e-5


def test_reduce_delta_on_a_hand_made_case() -> None:
    base = torch.tensor([[[1.0, 1.0], [2.0, 0.0]], [[1.0, -1.0], [0.0, 2.0]]])  # (P=2, layers=2, hidden=2)
    states = base[None] + torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 0.0], [0.0, 0.0]]])[None]
    torch.testing.assert_close(reduce_delta(states, base, DeltaSpec("mean", (0, 1))),
                               torch.tensor([[2.0, 0.0, 0.0, 1.0]]))
    torch.testing.assert_close(reduce_delta(states, base, DeltaSpec("per_probe", (0, 1))),
                               torch.tensor([[[1.0, 0.0, 0.0, 2.0], [3.0, 0.0, 0.0, 0.0]]]))
    # Normalised: each layer divided by the RMS of the base states there (layer 0: 1, layer 1: sqrt(2)).
    torch.testing.assert_close(layer_scales(base), torch.tensor([1.0, 2.0 ** 0.5]))
    torch.testing.assert_close(reduce_delta(states, base, DeltaSpec("mean", (0, 1), normalise=True)),
                               torch.tensor([[2.0, 0.0, 0.0, 1.0 / 2.0 ** 0.5]]))


def test_delta_spec_of_params() -> None:
    assert delta_spec("mean", "last", 4) == DeltaSpec()
    assert delta_spec("per_probe", "all", 3) == DeltaSpec("per_probe", (0, 1, 2), normalise=True)
    assert delta_spec("mean", [2, 0, 2], 3) == DeltaSpec("mean", (0, 2), normalise=True)
    with pytest.raises(LlgbmError, match="delta_layers"):
        delta_spec("mean", [3], 3)


def test_delta_does_not_depend_on_batch_companions(random_base) -> None:
    computer, adapters, _, _ = _setup(random_base)
    with torch.no_grad():
        together = computer(stack_adapters(adapters))
        reversed_order = computer(stack_adapters(adapters[::-1])).flip(0)
        alone = torch.cat([computer(stack_adapters([a])) for a in adapters])
    torch.testing.assert_close(reversed_order, together, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(alone, together, rtol=1e-6, atol=1e-6)


def test_padding_does_not_change_a_delta(random_base) -> None:
    computer, adapters, ids, mask = _setup(random_base)
    lengths = mask.sum(-1)
    per_probe = []
    with torch.no_grad():
        padded = computer(stack_adapters(adapters[:2]))
        for i, length in enumerate(lengths.tolist()):
            single = DeltaComputer(computer.model, computer.layout, computer.scaling,
                                   ids[i : i + 1, :length], mask[i : i + 1, :length])
            per_probe.append(single(stack_adapters(adapters[:2])))
    torch.testing.assert_close(torch.stack(per_probe).mean(0), padded, rtol=1e-5, atol=1e-6)


def test_batched_lora_forward_is_the_lora_formula() -> None:
    torch.manual_seed(0)
    n_adapters, probes, length, d_in, d_out, rank = 3, 2, 4, 5, 6, 2
    x = torch.randn(n_adapters * probes, length, d_in, dtype=torch.float64)
    a = torch.randn(n_adapters, rank, d_in, dtype=torch.float64)
    b = torch.randn(n_adapters, d_out, rank, dtype=torch.float64)
    base_out = torch.randn(n_adapters * probes, length, d_out, dtype=torch.float64)
    out = batched_lora_forward(x, base_out, a, b, 0.5)
    for row in range(n_adapters * probes):
        j = row // probes
        torch.testing.assert_close(out[row], base_out[row] + 0.5 * x[row] @ a[j].T @ b[j].T)


def _rms_norm_in_input_dtype(self, hidden_states: torch.Tensor) -> torch.Tensor:
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def test_gradcheck_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    # HF's Qwen2RMSNorm computes in float32 even for float64 input, which would cap gradcheck at
    # float32 resolution; the same formula kept in float64 lets gradcheck see our path exactly.
    from transformers.models.qwen2 import modeling_qwen2

    monkeypatch.setattr(modeling_qwen2.Qwen2RMSNorm, "forward", _rms_norm_in_input_dtype)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=16, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).double().eval()
    model.requires_grad_(False)
    lora = LoraConfig(rank=2, alpha=4.0)
    layout = layout_of_model(model, lora)
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    computer = DeltaComputer(model, layout, lora_scaling(lora), ids, mask)
    tensors = [torch.randn(2, *shape, dtype=torch.float64, requires_grad=True)
               for slot in layout for shape in (slot.a_shape, slot.b_shape)]

    def delta(*flat: torch.Tensor) -> torch.Tensor:
        adapters = {slot.name: (flat[2 * i], flat[2 * i + 1]) for i, slot in enumerate(layout)}
        return computer(adapters)

    assert torch.autograd.gradcheck(delta, tuple(tensors), eps=1e-6, atol=1e-5)


def test_gradients_reach_every_adapter_tensor(random_base) -> None:
    computer, adapters, _, _ = _setup(random_base)
    batch = {n: (a.clone().requires_grad_(True), b.clone().requires_grad_(True))
             for n, (a, b) in stack_adapters(adapters[:2]).items()}
    computer(batch).pow(2).sum().backward()
    for a, b in batch.values():
        assert a.grad is not None and a.grad.abs().sum() > 0
        assert b.grad is not None and b.grad.abs().sum() > 0
    assert all(p.grad is None for p in computer.model.parameters())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(random_base, checkpointing: bool) -> None:
    computer, adapters, ids, mask = _setup(random_base)
    reference = {n: (a.clone().requires_grad_(True), b.clone().requires_grad_(True))
                 for n, (a, b) in stack_adapters(adapters[:2]).items()}
    computer(reference).sum().backward()
    other = DeltaComputer(load_base(random_base["base"]), computer.layout, computer.scaling, ids, mask,
                          gradient_checkpointing=checkpointing)
    batch = {n: (a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True))
             for n, (a, b) in reference.items()}
    other(batch).sum().backward()
    for name in batch:
        torch.testing.assert_close(batch[name][0].grad, reference[name][0].grad, rtol=1e-5, atol=1e-6)


def test_a_bf16_frozen_base_gives_the_fp32_weights_delta_within_one_percent(micro) -> None:
    """Under bf16 mixed precision the frozen base is loaded with bf16 weights (core.precision.frozen_base_dtype):
    its delta stays within 1% (relative norm) of the fp32-weights delta (0.3% on the micro base). A measured
    property of a trained base and its teachers, so an integration test: a random base's small activations
    round worse (1-4% there)."""
    from llgbm.artifacts.base_model import load_tokenizer
    from llgbm.core.lora import lora_layout
    from llgbm.core.precision import frozen_base_dtype
    from llgbm.data.probes import tokenize_probes

    from .conftest import checkpoint_dirs, micro_probe_set

    cfg = micro["cfg"]
    tokenizer = load_tokenizer(micro["base"])
    ids, mask = tokenize_probes(micro_probe_set(cfg, micro["tasks"], tokenizer), tokenizer)
    computer = DeltaComputer(load_base(micro["base"]), lora_layout(load_base(micro["base"]).config, cfg.lora),
                             lora_scaling(cfg.lora), ids, mask)
    adapters = [load_adapter_tensors(d, computer.layout, cfg.lora) for d in checkpoint_dirs(micro["teachers"])]
    assert frozen_base_dtype("float32", "bf16") == "bfloat16" and frozen_base_dtype("float32", "no") == "float32"
    bf16 = DeltaComputer(load_base(micro["base"], "bfloat16"), computer.layout, computer.scaling, ids, mask,
                         autocast_dtype=torch.bfloat16)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        reference, delta = computer(stack_adapters(adapters)), bf16(stack_adapters(adapters))
    assert delta.dtype == torch.float32  # the delta itself is fp32 whatever the compute dtype
    relative = (delta - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
    assert relative.max() < 0.01
