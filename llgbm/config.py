"""The one validated configuration object, loaded from params.yaml.

The recipes' own sections (teachers, diagnostics, deltas, kl, train, evaluate) and the top-level knobs
are defined here; a component's section (lora, base, tasks, probes, encoder, generator) is defined, with
its defaults and options, in the module that owns it, and assembled here. params.yaml overrides the
defaults. Unknown keys, wrong types, unknown option names and cross-key rules are rejected at load time
with the key named, before any work.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llgbm.artifacts.base_model import DTYPES, BaseConfig
from llgbm.core.delta import DELTA_REDUCTIONS
from llgbm.core.generator import CONDITIONS, GENERATOR_KINDS, GeneratorConfig
from llgbm.core.lora import LoraConfig
from llgbm.core.losses import DELTA_LOSS_TYPES, LAMBDA_SCHEDULES, LOSS_BALANCES
from llgbm.core.objective import BEHAVIOUR_LOSSES
from llgbm.core.precision import MIXED_PRECISION
from llgbm.data.encoder import FACTORS, EncoderConfig
from llgbm.data.probes import PROBE_TEMPLATES, PROBE_TYPES, ProbesConfig
from llgbm.data.split import fold_heldout, resolve_names, unsupported_heldout
from llgbm.data.tasks import (
    BUILTIN_TASKS,
    CUE_PLACES,
    SELECTORS,
    TASK_FAMILIES,
    TRANSFORMS,
    TasksConfig,
    builtin_task_names,
    compositional_pairs,
    task_pairs,
)
from llgbm.infra.errors import LlgbmError, first_line
from llgbm.infra.io import read_text
from llgbm.infra.paths import TASK_FILES_DIR

BELOW_BAR = ("fail", "warn")


@dataclass
class TeachersConfig:
    seed: int = 0  # the shared LoRA initialisation and the batch order
    steps: int = 200
    batch_size: int = 32
    learning_rate: float = 5e-3
    checkpoints_per_task: int = 3  # the last K snapshots of each task's trajectory
    checkpoint_interval: int = 20
    min_accuracy: float = 0.9  # the bar: every checkpoint's accuracy on its own task's test records
    below_bar: str = "fail"  # a teacher below the bar: "fail" the stage (nothing kept) or "warn" and keep all
    # Teachers trained together: this many tasks' LoRAs share one batched forward of the frozen base.
    tasks_per_batch: int = 64


@dataclass
class DiagnosticsConfig:
    # The multi-task LoRA reference: one LoRA (from the teachers' shared init) on every training task's
    # records, measured on held-out tasks; a generator that does not beat it adds nothing.
    multitask_steps: int = 1000
    multitask_batch_size: int = 64
    multitask_learning_rate: float = 5e-3
    # Prompt -> task recoverability: a ridge read-out (not a behavioural probe) on this many train-prompt embeddings per task.
    readout_prompts: int = 32
    ridge_penalty: float = 1.0
    nearest_k: int = 3  # the k-nearest-teachers baseline: similarity-weighted mean of k teachers' updates


@dataclass
class DeltasConfig:
    adapters_per_batch: int = 8


@dataclass
class SftConfig:
    # The task loss (behaviour_loss: sft): per generated adapter and step, this many of its own task's
    # training records (drawn afresh each step; a held-out task's records never reach training).
    records: int = 8


@dataclass
class KLConfig:
    # The full-behaviour reference: each teacher's next-token distribution at the answer position of a
    # fixed sample of its own task's training prompts, cached beside its delta.
    prompts: int = 8  # per task
    top_k: int = 0  # 0: the full distribution (small vocabularies); k: the top k tokens plus the rest's mass
    seed: int = 0


@dataclass
class TrainConfig:
    steps: int = 1500  # optimizer steps
    batch_size: int = 8
    # Generated adapters of each batch (its first items) whose behaviour term is computed, in one batched
    # forward of the frozen base, whatever the term.
    behaviour_adapters: int = 2
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100  # learning-rate warmup, then linear decay to 0
    max_grad_norm: float = 1.0
    lambda_weights: float = 1.0  # 0 gives behaviour-only training
    # 0: lambda_weights throughout; N: the weight term's weight falls linearly to 0 over the first N steps
    # (a weight-matching warm start handing over to the behaviour term).
    lambda_weights_decay_steps: int = 0
    lambda_warmup_steps: int = 300
    save_interval: int = 250
    log_interval: int = 10  # dvclive summary (metrics.json) refresh; per-step metrics are logged every step
    validation_interval: int = 250  # with validation_tasks: validation accuracy every this many steps, and at the last
    mixed_precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU; or "no", "bf16" (fp16 is refused)
    gradient_checkpointing: bool = False


@dataclass
class EvaluateConfig:
    prompt_batches: int = 3  # generated adapters per task, each from its own batch of test prompts
    # The evaluation probe set: test-split prompts of every task (held-out ones first), never a train
    # prompt of any task, formatted as probes.template / probes.max_length say. Its own seed, so arms that
    # differ in the training probes are measured on the same evaluation probes.
    probe_count: int = 16
    probe_seed: int = 0


@dataclass
class Config:
    # Top-level knobs of the ablation grid (dvc exp run -S key=value).
    lambda_delta: float = 1.0
    delta_loss_type: str = "mse"
    probe_count: int = 5
    lambda_schedule: str = "linear"
    # How the delta term's gradient is weighted: "none" (the plain sum) or "grad_norm" (lambda_delta is the
    # ratio of the delta term's gradient norm to the weight term's, at the generated tokens).
    loss_balance: str = "none"
    # The behavioural term: "delta" (the probe delta), "kl" (the full-behaviour reference: KL from the
    # teacher's answer distribution to the generated adapter's, see `kl`) or "sft" (the task loss: the
    # cross-entropy of the task's own training answers under the generated adapter, see `sft`).
    behaviour_loss: str = "delta"
    delta_reduce: str = "mean"  # mean over probes (the seed's delta) or per_probe (a (P, hidden) target)
    # "last" (the seed's), "all", or a list of decoder-layer indices; several layers are each normalised
    # by the base model's state scale there and concatenated.
    delta_layers: Any = "last"
    seed: int = 0  # the generator's initialisation and data order (teachers have their own seeds)
    # Train on this many of the non-held-out tasks (None: all): a fixed subset that keeps compositional
    # support, nested across counts (see tasks.training_tasks), so held-out accuracy can be measured
    # against the number of training tasks.
    max_training_tasks: int | None = None
    # This many of the tasks not held out are kept out of training as validation tasks (each selector and
    # transform of theirs still in training): what hyperparameters are chosen on, never the held-out fold.
    # 0: none (a final run trains on every task not held out).
    validation_tasks: int = 0
    heldout_tasks: list[str] = field(default_factory=lambda: ["third", "before_last"])
    # Every task held out once: K disjoint held-out sets (heldout_folds, None: use heldout_tasks) and which
    # of them this run holds out (heldout_fold); with folds, heldout_tasks must be empty.
    heldout_folds: int | None = None
    heldout_fold: int = 0
    tasks: TasksConfig = field(default_factory=TasksConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    deltas: DeltasConfig = field(default_factory=DeltasConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def _build(cls: type, raw: Any, where: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise LlgbmError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            full = f"{where}.{key}" if where else str(key)
            near = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f" (did you mean '{f'{where}.{near[0]}' if where else near[0]}'?)" if near else ""
            raise LlgbmError(f"{source}: unknown key '{full}'{hint}")
    values = {}
    for name, value in raw.items():
        full = f"{where}.{name}" if where else name
        values[name] = _coerce(hints[name], value, full, source)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # `X | None`: null in YAML, else an X
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return None if value is None else _coerce(inner, value, key, source)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise LlgbmError(f"{source}: '{key}' must be a list, got {value!r}")
        return [_coerce(item, v, key, source) for v in value]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # YAML's .inf and .nan are floats no knob of ours can take
            raise LlgbmError(f"{source}: '{key}' must be a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is Any:  # a key of several shapes; validate() checks it
        return value
    raise LlgbmError(f"{source}: '{key}' must be {hint.__name__}, got {value!r}")


def _check_choice(value: str, choices: tuple[str, ...], key: str, source: str) -> None:
    if value not in choices:
        raise LlgbmError(f"{source}: '{key}' is '{value}', expected one of {', '.join(choices)}")


def _check_positive(value: float, key: str, source: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise LlgbmError(f"{source}: '{key}' must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _validate_knobs(cfg: Config, source: str) -> None:
    """The grid's top-level knobs and the KL reference."""
    _check_choice(cfg.delta_loss_type, DELTA_LOSS_TYPES, "delta_loss_type", source)
    _check_choice(cfg.lambda_schedule, LAMBDA_SCHEDULES, "lambda_schedule", source)
    _check_positive(cfg.lambda_delta, "lambda_delta", source, allow_zero=True)
    _check_positive(cfg.probe_count, "probe_count", source)
    _check_choice(cfg.delta_reduce, DELTA_REDUCTIONS, "delta_reduce", source)
    _check_choice(cfg.loss_balance, LOSS_BALANCES, "loss_balance", source)
    _check_choice(cfg.behaviour_loss, BEHAVIOUR_LOSSES, "behaviour_loss", source)
    _check_positive(cfg.kl.prompts, "kl.prompts", source)
    _check_positive(cfg.kl.top_k, "kl.top_k", source, allow_zero=True)
    layers = cfg.delta_layers
    if not (layers in ("last", "all") or (isinstance(layers, list) and layers and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in layers))):
        raise LlgbmError(f"{source}: 'delta_layers' is {layers!r}, expected last, all or a non-empty list of "
                         "layer indices >= 0")


def _validate_tasks(cfg: Config, source: str) -> None:
    """Where the tasks come from and their sizes."""
    _check_choice(cfg.tasks.family, TASK_FAMILIES, "tasks.family", source)
    _check_choice(cfg.tasks.cue, CUE_PLACES, "tasks.cue", source)
    if cfg.tasks.source != "builtin" and cfg.tasks.cue != "prompt":
        raise LlgbmError(f"{source}: 'tasks.cue' places the built-in tasks' cue; a task file gives the generator's "
                         "text as an 'instruction' per record or per file instead")
    if cfg.tasks.source == "builtin" and cfg.tasks.family == "eight":
        for name in cfg.tasks.names:
            _check_choice(name, BUILTIN_TASKS, "tasks.names", source)
        if len(set(cfg.tasks.names)) != len(cfg.tasks.names) or not cfg.tasks.names:
            raise LlgbmError(f"{source}: 'tasks.names' must be a non-empty list without repeats")
    elif cfg.tasks.source == "builtin":
        for key, known in (("selectors", SELECTORS), ("transforms", TRANSFORMS)):
            values = getattr(cfg.tasks, key)
            for value in values:
                _check_choice(value, known, f"tasks.{key}", source)
            if len(set(values)) != len(values) or not values:
                raise LlgbmError(f"{source}: 'tasks.{key}' must be a non-empty list without repeats")
    elif cfg.tasks.source == "files":
        if not cfg.tasks.files:
            raise LlgbmError(f"{source}: 'tasks.files' is empty but tasks.source is 'files'")
        for name in cfg.tasks.files:
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise LlgbmError(f"{source}: 'tasks.files' entry '{name}' must be a file name inside {TASK_FILES_DIR}/ "
                                 "(the folder DVC tracks for the tasks stage)")
    else:
        raise LlgbmError(f"{source}: 'tasks.source' is '{cfg.tasks.source}', expected builtin or files")
    if not 0.0 < cfg.tasks.test_fraction < 1.0:
        raise LlgbmError(f"{source}: 'tasks.test_fraction' must be in (0, 1)")
    for key in ("train_per_task", "test_per_task", "sequence_length"):
        _check_positive(getattr(cfg.tasks, key), f"tasks.{key}", source)
    if cfg.tasks.sequence_length < 4 or cfg.tasks.sequence_length > 9:
        raise LlgbmError(f"{source}: 'tasks.sequence_length' must be between 4 and 9")


def _validate_base(cfg: Config, source: str) -> None:
    """The base model and the LoRA every adapter shares."""
    _check_choice(cfg.base.dtype, DTYPES, "base.dtype", source)
    for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
        _check_positive(getattr(cfg.base.tiny, key), f"base.tiny.{key}", source)
    if cfg.base.tiny.hidden_size % cfg.base.tiny.num_heads or cfg.base.tiny.num_heads % cfg.base.tiny.num_kv_heads:
        raise LlgbmError(f"{source}: 'base.tiny' needs hidden_size % num_heads == 0 and num_heads % num_kv_heads == 0")
    _check_positive(cfg.base.pretrain_steps, "base.pretrain_steps", source, allow_zero=True)
    _check_positive(cfg.base.pretrain_texts, "base.pretrain_texts", source)
    for share in ("pretrain_primitive_share", "pretrain_composition_share"):
        if not 0.0 <= getattr(cfg.base, share) <= 1.0:
            raise LlgbmError(f"{source}: 'base.{share}' must be in [0, 1]")
        if getattr(cfg.base, share) > 0 and not (cfg.tasks.source == "builtin" and cfg.tasks.family == "compositional"):
            raise LlgbmError(f"{source}: 'base.{share}' needs tasks.family 'compositional' (built-in); "
                             "set it to 0 for other tasks")
    if cfg.base.pretrain_primitive_share + cfg.base.pretrain_composition_share > 1.0:
        raise LlgbmError(f"{source}: 'base.pretrain_primitive_share' + 'base.pretrain_composition_share' must be at most 1")
    _check_positive(cfg.lora.rank, "lora.rank", source)
    _check_positive(cfg.lora.alpha, "lora.alpha", source)
    if not cfg.lora.target_modules:
        raise LlgbmError(f"{source}: 'lora.target_modules' is empty")


def _validate_teachers(cfg: Config, source: str) -> None:
    """Teachers and the diagnostics' references."""
    t = cfg.teachers
    for key in ("steps", "batch_size", "learning_rate", "checkpoints_per_task", "checkpoint_interval", "tasks_per_batch"):
        _check_positive(getattr(t, key), f"teachers.{key}", source)
    _check_choice(t.below_bar, BELOW_BAR, "teachers.below_bar", source)
    if (t.checkpoints_per_task - 1) * t.checkpoint_interval >= t.steps:
        raise LlgbmError(f"{source}: 'teachers.steps' must exceed (checkpoints_per_task - 1) * checkpoint_interval")
    for key in ("multitask_steps", "multitask_batch_size", "multitask_learning_rate", "readout_prompts", "ridge_penalty",
                "nearest_k"):
        _check_positive(getattr(cfg.diagnostics, key), f"diagnostics.{key}", source)


def _validate_probes(cfg: Config, source: str) -> None:
    """The probes and the deltas stage."""
    for probe_type in cfg.probes.types:
        _check_choice(probe_type, PROBE_TYPES, "probes.types", source)
    if not cfg.probes.types:
        raise LlgbmError(f"{source}: 'probes.types' is empty")
    if "generic" in cfg.probes.types and cfg.tasks.source != "builtin":
        raise LlgbmError(f"{source}: 'probes.types' has 'generic', whose texts exist for the built-in tasks only; "
                         "use [task] with tasks.source files")
    _check_choice(cfg.probes.template, PROBE_TEMPLATES, "probes.template", source)
    _check_positive(cfg.probes.max_length, "probes.max_length", source)
    _check_positive(cfg.deltas.adapters_per_batch, "deltas.adapters_per_batch", source)


def heldout_names(cfg: Config, names: list[str]) -> list[str]:
    """The held-out tasks among `names`: heldout_tasks, or with heldout_folds the fold's tasks."""
    if cfg.heldout_folds is None:
        return list(cfg.heldout_tasks)
    return fold_heldout(names, task_pairs(cfg.tasks), cfg.heldout_folds, cfg.heldout_fold, cfg.tasks.seed)


def _validate_split(cfg: Config, source: str) -> None:
    """heldout_tasks (or the fold) and max_training_tasks, against the built-in family's names (task files
    are checked by the check stage, which reads them)."""
    if cfg.heldout_folds is not None and cfg.heldout_tasks:
        # Folds decide the held-out set; a list beside them would be ignored without a word.
        raise LlgbmError(f"{source}: 'heldout_tasks' and 'heldout_folds' are both set; set heldout_folds: null to hold "
                         "out heldout_tasks, or heldout_tasks: [] to hold out the folds")
    if cfg.heldout_folds is not None and cfg.tasks.source == "builtin":
        try:
            heldout = heldout_names(cfg, builtin_task_names(cfg.tasks))
        except LlgbmError as exc:
            raise LlgbmError(f"{source}: {exc}") from None
        cfg = dataclasses.replace(cfg, heldout_tasks=heldout)
    repeated = sorted({name for name in cfg.heldout_tasks if cfg.heldout_tasks.count(name) > 1})
    if repeated:
        raise LlgbmError(f"{source}: 'heldout_tasks' names {repeated} more than once")
    if cfg.max_training_tasks is not None:
        _check_positive(cfg.max_training_tasks, "max_training_tasks", source)
    _check_positive(cfg.validation_tasks, "validation_tasks", source, allow_zero=True)
    if cfg.tasks.source == "builtin":
        names = builtin_task_names(cfg.tasks)
        unknown = [t for t in cfg.heldout_tasks if t not in names]
        if unknown:
            where = "tasks.names" if cfg.tasks.family == "eight" else "the pairs of tasks.selectors x tasks.transforms"
            raise LlgbmError(f"{source}: 'heldout_tasks' names {unknown}, which are not in {where}")
        if len(cfg.heldout_tasks) >= len(names):
            raise LlgbmError(f"{source}: 'heldout_tasks' must leave at least one task for training")
        if cfg.tasks.family == "compositional":
            pairs = compositional_pairs(cfg.tasks.selectors, cfg.tasks.transforms)
            unsupported = unsupported_heldout(pairs, cfg.heldout_tasks)
            if unsupported:
                raise LlgbmError(f"{source}: 'heldout_tasks' {unsupported} lack compositional support: a selector "
                                 f"or transform of theirs occurs in no training pair")
        try:
            resolve_names(names, cfg.heldout_tasks, cfg.max_training_tasks, task_pairs(cfg.tasks), cfg.tasks.seed,
                          cfg.validation_tasks)
        except LlgbmError as exc:
            raise LlgbmError(f"{source}: {exc}") from None


def _validate_training(cfg: Config, source: str) -> None:
    """The encoder, generator, training and evaluation, and the rules that join them."""
    _check_positive(cfg.encoder.batch_size, "encoder.batch_size", source)
    if cfg.encoder.model == FACTORS and task_pairs(cfg.tasks) is None:
        raise LlgbmError(f"{source}: 'encoder.model' {FACTORS!r} needs the built-in compositional family (tasks.source "
                         "builtin, tasks.family compositional): its tasks are (selector, transform) pairs")
    g = cfg.generator
    _check_choice(g.kind, GENERATOR_KINDS, "generator.kind", source)
    _check_choice(g.condition, CONDITIONS, "generator.condition", source)
    for key in ("chunk_width", "prompts_per_sample", "feature_dim", "hidden_dim", "depth"):
        _check_positive(getattr(g, key), f"generator.{key}", source)
    if g.max_scale_factor <= 1:
        raise LlgbmError(f"{source}: 'generator.max_scale_factor' must be > 1, got {g.max_scale_factor}")
    if not g.channels or min(g.channels) <= 0:
        raise LlgbmError(f"{source}: 'generator.channels' must be a non-empty list of positive ints")
    tr = cfg.train
    # max_grad_norm is always applied: 0 would clip every gradient to nothing and train nothing.
    for key in ("steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "save_interval", "log_interval",
                "validation_interval", "max_grad_norm"):
        _check_positive(getattr(tr, key), f"train.{key}", source)
    _check_positive(cfg.sft.records, "sft.records", source)
    for key in ("behaviour_adapters", "weight_decay", "warmup_steps", "lambda_weights", "lambda_warmup_steps",
                "lambda_weights_decay_steps"):
        _check_positive(getattr(tr, key), f"train.{key}", source, allow_zero=True)
    if tr.behaviour_adapters > tr.batch_size:
        raise LlgbmError(f"{source}: 'train.behaviour_adapters' ({tr.behaviour_adapters}) exceeds train.batch_size")
    if tr.mixed_precision == "fp16":
        # fp16 needs a dynamic loss scale, which the training checkpoints do not carry: a resumed run would
        # not continue the one that was killed.
        raise LlgbmError(f"{source}: 'train.mixed_precision' fp16 is not supported (its loss scale is not "
                         "checkpointed); use bf16 or no")
    _check_choice(tr.mixed_precision, MIXED_PRECISION, "train.mixed_precision", source)
    _check_positive(cfg.evaluate.prompt_batches, "evaluate.prompt_batches", source)
    _check_positive(cfg.evaluate.probe_count, "evaluate.probe_count", source)
    if tr.lambda_weights_decay_steps and cfg.loss_balance == "grad_norm":
        raise LlgbmError(f"{source}: 'loss_balance' grad_norm scales the behaviour term to the weight term's gradient, "
                         "which train.lambda_weights_decay_steps takes to 0; use loss_balance none with the decay")
    if tr.lambda_weights_decay_steps and (cfg.lambda_delta == 0 or tr.behaviour_adapters == 0):
        raise LlgbmError(f"{source}: 'train.lambda_weights_decay_steps' hands over to a behaviour term, but lambda_delta "
                         "or train.behaviour_adapters is 0")
    if tr.lambda_weights == 0 and cfg.loss_balance == "grad_norm":
        raise LlgbmError(f"{source}: 'loss_balance' grad_norm scales the delta term to the weight term's gradient, "
                         "which train.lambda_weights 0 removes; use loss_balance none for delta-only training")
    if tr.lambda_weights == 0 and (cfg.lambda_delta == 0 or tr.behaviour_adapters == 0):
        raise LlgbmError(f"{source}: 'train.lambda_weights' and 'lambda_delta' are both 0: nothing to train on")


def validate(cfg: Config, source: str = "params.yaml") -> Config:
    """Every value and cross-key rule that needs no data; the first violation is a one-line error."""
    for check in (_validate_knobs, _validate_tasks, _validate_base, _validate_teachers, _validate_probes,
                  _validate_split, _validate_training):
        check(cfg, source)
    return cfg


def config_from_dict(raw: dict, source: str = "params.yaml") -> Config:
    return validate(_build(Config, raw or {}, "", source), source)


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    text = read_text(path, "params file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LlgbmError(f"{path}: not valid YAML ({first_line(exc)})") from None
    return config_from_dict(raw or {}, str(path))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
