"""The prompt-conditioned LoRA generators: a condition of N prompt embeddings of one task, (batch, N, E),
in; the adapter's normalised weight tokens (batch, T, D) and their scales (batch, T, 2) out.

Three kinds (`GeneratorConfig.kind`):
- "hyperconv" (after DnD's hyper-convolutional decoder): each prompt embedding is projected to a feature
  axis of width F; convolutions along the feature axis treat the prompt axis as channels and grow it into
  the token axis (N -> c1 -> ... -> T); one head shared by all tokens squeezes each token's F features
  into the token grid, plus a learned per-token offset. Its kernels slide along an axis whose order is
  arbitrary, and it reads the prompts as ordered channels although they are redrawn in any order.
- "mlp" (in Text-to-LoRA's spirit): the prompts are mean-pooled (order-invariant) and encoded into a task
  vector; each of the T tokens has a learned query embedding (it names the token's layer, module, A or B
  and chunk); a residual MLP trunk shared by all tokens reads [task vector; query] and one head per
  token role (module and A or B) writes the token, plus a learned per-token offset.
- "linear" (the mlp kind without its nonlinear trunk): each token is a linear function of the mean-pooled
  prompts, through a shared projection to a task vector, the token's own query (a diagonal mixing of it)
  and its role's head. A condition that is the sum of its parts gives the sum of their tokens: where the
  encoder makes a composition's embedding additive in its factors, the generated weights are additive in
  them. Issue 34's test of whether such structure composes; measured, it does not (docs/results.md).

Either kind can be made prompt-blind (`condition: constant`): it ignores its input and sees zeros, the
same generator and objective without the prompts (a reference that tells conditioning from averaging).

The bound (`max_scale_factor` F): the generated tokens are normalised over their real entries, as the
targets are by construction, and each token's scales are squashed (tanh) into a band around the
training teachers' mean scales for that token (`scale_centre`, set by `start_at_mean`): its std within
a factor F of theirs, its mean within F of their stds. So no objective can make an adapter more than
about 2F times a typical teacher's norm (measured on the embedded default: the teachers' own log-stds
lie within 0.94 of their mean, a factor 2.6, so F = 4 excludes no teacher).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from llgbm.core.weight_tokens import standardise, token_mask

GENERATOR_KINDS = ("hyperconv", "mlp", "linear")
CONDITIONS = ("prompts", "constant")
# The eps of the generated tokens' normalisation: larger than the targets' (weight_tokens.STD_EPS), so that a
# generated token near zero std keeps a bounded gradient.
GENERATED_STD_EPS = 1e-6


@dataclass
class GeneratorConfig:
    kind: str = "mlp"  # hyperconv (DnD) | mlp (T2L-style: pooled prompts, per-token queries, shared trunk) | linear
    condition: str = "prompts"  # prompts | constant (prompt-blind: the same generator, a constant condition)
    chunk_width: int = 64  # weight-token width; token size = lora.rank * chunk_width
    prompts_per_sample: int = 8  # N prompts of one task condition one generated adapter
    feature_dim: int = 256  # hyperconv: each prompt embedding is projected to this feature axis
    channels: list[int] = field(default_factory=lambda: [32, 64])  # hyperconv: conv channels, prompt axis -> tokens
    hidden_dim: int = 512  # mlp, linear: width of the task vector, the queries and the trunk
    depth: int = 2  # mlp: residual blocks in the trunk
    max_scale_factor: float = 4.0  # the bound F (see the module's docstring)


@dataclass(frozen=True)
class GeneratorShape:
    kind: str
    condition: str
    prompts: int  # N
    embed_dim: int  # E
    feature_dim: int  # F (hyperconv)
    channels: tuple[int, ...]  # (hyperconv)
    hidden_dim: int  # (mlp)
    depth: int  # (mlp)
    num_tokens: int  # T
    token_dim: int  # D
    token_roles: tuple[int, ...]  # per token: its role (module and A or B), which picks its mlp head
    chunk_width: int  # a token is rank x chunk_width entries, row-major
    token_columns: tuple[int, ...]  # per token: its real columns (the rest is padding)
    max_scale_factor: float  # the bound F

    def to_dict(self) -> dict:
        return {**asdict(self), **{k: list(getattr(self, k)) for k in _TUPLES}}

    @classmethod
    def from_dict(cls, raw: dict) -> "GeneratorShape":
        return cls(**{**raw, **{k: tuple(raw[k]) for k in _TUPLES}})

    def check(self) -> None:
        """Known kind and condition, positive integer sizes, one role per token; else a ValueError naming it."""
        if self.kind not in GENERATOR_KINDS:
            raise ValueError(f"'kind' is {self.kind!r}, expected one of {GENERATOR_KINDS}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"'condition' is {self.condition!r}, expected one of {CONDITIONS}")
        if not (isinstance(self.max_scale_factor, (int, float)) and self.max_scale_factor > 1):
            raise ValueError(f"'max_scale_factor' is {self.max_scale_factor!r}, expected a number > 1")
        for name, value in asdict(self).items():
            if name in ("kind", "condition", "token_roles", "max_scale_factor"):
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
                raise ValueError(f"'{name}' is {value!r}, expected positive integers")
        roles = self.token_roles
        if len(roles) != self.num_tokens or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in roles):
            raise ValueError(f"'token_roles' must hold {self.num_tokens} non-negative integers")
        if len(self.token_columns) != self.num_tokens or max(self.token_columns) > self.chunk_width \
                or self.token_dim % self.chunk_width:
            raise ValueError(f"'token_columns' must hold {self.num_tokens} counts of at most chunk_width, which "
                             "must divide token_dim")


_TUPLES = ("channels", "token_roles", "token_columns")


def generator_shape(cfg: GeneratorConfig, embed_dim: int, token_roles: list[int], token_columns: list[int],
                    token_dim: int) -> GeneratorShape:
    """The shape of the generator `cfg` describes, for a token grid of len(token_roles) tokens of token_dim
    (a weight tokenizer's token_roles(), token_columns() and token_dim)."""
    return GeneratorShape(cfg.kind, cfg.condition, cfg.prompts_per_sample, embed_dim, cfg.feature_dim,
                          tuple(cfg.channels), cfg.hidden_dim, cfg.depth, len(token_roles), token_dim, tuple(token_roles),
                          cfg.chunk_width, tuple(token_columns), cfg.max_scale_factor)


def bounded_scales(scales: torch.Tensor, centre: torch.Tensor, factor: float) -> torch.Tensor:
    """(mean, log std) squashed into the band around `centre`: log std within log(factor) of the centre's,
    the mean within factor x the centre's std of the centre's mean; near the centre, the identity."""
    band = torch.log(torch.tensor(factor, dtype=scales.dtype))
    log_std = centre[..., 1] + band * torch.tanh((scales[..., 1] - centre[..., 1]) / band)
    width = factor * torch.exp(centre[..., 1])
    mean = centre[..., 0] + width * torch.tanh((scales[..., 0] - centre[..., 0]) / width)
    return torch.stack([mean, log_std], dim=-1)


class HyperConvDecoder(nn.Module):
    """DnD's decoder: (batch, N, E) -> (batch, T, D + 2)."""

    def __init__(self, shape: GeneratorShape):
        super().__init__()
        self.project = nn.Sequential(nn.LayerNorm(shape.embed_dim), nn.Linear(shape.embed_dim, shape.feature_dim), nn.SiLU())
        widths = [shape.prompts, *shape.channels]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv1d(c_in, c_out, kernel_size=3, padding=1), nn.GroupNorm(1, c_out), nn.SiLU()]
        layers.append(nn.Conv1d(widths[-1], shape.num_tokens, kernel_size=3, padding=1))
        self.grow = nn.Sequential(*layers)
        self.head = nn.Linear(shape.feature_dim, shape.token_dim + 2)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        return self.head(self.grow(self.project(condition)))

    def zero_last_layer(self) -> None:
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RoleHeads(nn.Module):
    """One linear head per token role (module and A or B), each applied to that role's tokens:
    (batch, T, h) -> (batch, T, out). Gathering a head per token would hold T copies."""

    def __init__(self, token_roles: tuple[int, ...], width: int, out: int):
        super().__init__()
        roles = torch.tensor(token_roles)
        n_roles = int(roles.max()) + 1
        # The token indices grouped by role, a buffer that moves with the module (not saved).
        per_role = [torch.nonzero(roles == r).flatten() for r in range(n_roles)]
        self.register_buffer("tokens_by_role", torch.cat(per_role), persistent=False)
        self.role_sizes = [len(tokens) for tokens in per_role]
        self.weight = nn.Parameter(torch.randn(n_roles, width, out) * width ** -0.5)
        self.bias = nn.Parameter(torch.zeros(n_roles, out))

    def zero(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_empty(*x.shape[:2], self.weight.shape[-1])
        for role, tokens in enumerate(self.tokens_by_role.split(self.role_sizes)):
            out[:, tokens] = x[:, tokens] @ self.weight[role] + self.bias[role]
        return out


class QueryMlpDecoder(nn.Module):
    """T2L-style decoder: mean-pooled prompts -> task vector; [task vector; token query] -> residual trunk ->
    the token's role head. (batch, N, E) -> (batch, T, D + 2)."""

    def __init__(self, shape: GeneratorShape):
        super().__init__()
        h = shape.hidden_dim
        self.encode = nn.Sequential(nn.LayerNorm(shape.embed_dim), nn.Linear(shape.embed_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.queries = nn.Parameter(torch.randn(shape.num_tokens, h) * h ** -0.5)
        self.mix = nn.Linear(2 * h, h)
        self.trunk = nn.Sequential(*[ResidualBlock(h) for _ in range(shape.depth)], nn.LayerNorm(h))
        self.heads = RoleHeads(shape.token_roles, h, shape.token_dim + 2)

    def zero_last_layer(self) -> None:
        self.heads.zero()

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        task = self.encode(condition.mean(1))  # (batch, h): the prompts' order cannot matter
        queries = self.queries.expand(task.shape[0], -1, -1)
        return self.heads(self.trunk(self.mix(torch.cat([task.unsqueeze(1).expand_as(queries), queries], dim=-1))))


class LinearDecoder(nn.Module):
    """Linear in the prompts' mean (after one LayerNorm): task vector = W mean; token t = head_role(t)(task *
    query_t). (batch, N, E) -> (batch, T, D + 2)."""

    def __init__(self, shape: GeneratorShape):
        super().__init__()
        h = shape.hidden_dim
        self.encode = nn.Sequential(nn.LayerNorm(shape.embed_dim), nn.Linear(shape.embed_dim, h))
        self.queries = nn.Parameter(torch.randn(shape.num_tokens, h))
        self.heads = RoleHeads(shape.token_roles, h, shape.token_dim + 2)

    def zero_last_layer(self) -> None:
        self.heads.zero()

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        task = self.encode(condition.mean(1))  # (batch, h): the prompts' order cannot matter
        return self.heads(task.unsqueeze(1) * self.queries)


_DECODERS = {"hyperconv": HyperConvDecoder, "mlp": QueryMlpDecoder, "linear": LinearDecoder}


class LoraGenerator(nn.Module):
    def __init__(self, shape: GeneratorShape):
        super().__init__()
        shape.check()
        self.shape = shape
        self.decoder = _DECODERS[shape.kind](shape)
        self.token_offset = nn.Parameter(torch.zeros(shape.num_tokens, shape.token_dim + 2))
        self.register_buffer("mask", token_mask(shape.token_columns, shape.token_dim, shape.chunk_width), persistent=False)
        # The training teachers' mean (mean, log std) per token, the bound's centre: saved with the weights.
        self.register_buffer("scale_centre", torch.zeros(shape.num_tokens, 2))

    def forward(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """condition (batch, N, E) -> normalised tokens (batch, T, D; padding zero) and bounded scales (batch, T, 2)."""
        if self.shape.condition == "constant":
            condition = torch.zeros_like(condition)
        out = self.decoder(condition) + self.token_offset
        tokens = standardise(out[..., : self.shape.token_dim], self.mask, GENERATED_STD_EPS)[0]
        return tokens, bounded_scales(out[..., self.shape.token_dim :], self.scale_centre, self.shape.max_scale_factor)


@torch.no_grad()
def start_at_mean(model: LoraGenerator, tokens: torch.Tensor, scales: torch.Tensor) -> None:
    """Make the untrained generator write the mean of the training targets (tokens (n, T, D), normalised,
    and scales (n, T, 2)) whatever its condition, and centre the bound there: the per-token offset is set
    to that mean and the decoder's last layer to zero, so the generator learns a residual from the average teacher (its last layer gets a
    gradient at once, the rest from the next step). A behavioural term alone (no weight term to pull the
    scales in first) would otherwise start from an adapter ~10x the teachers' size (measured: 12.9 at
    step 1 on the embedded default), whose gradients only clipping holds."""
    model.token_offset.copy_(torch.cat([tokens.mean(0), scales.mean(0)], dim=-1).to(model.token_offset))
    model.scale_centre.copy_(scales.mean(0))
    model.decoder.zero_last_layer()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
