"""Sweep files: load YAML, apply `key.sub=value` overrides, validate everything before Ray starts.

A sweep is the grid tasks x variants x hidden sizes x seeds; `task` is one spec or a list of them.
See `jobs/smoke.yaml` for an annotated example; `raylab validate FILE` runs exactly the checks below
and nothing else.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from raylab.spec.rules import SEED_LIMIT, check_distinct, check_seeds, check_sweep_name, expand_seeds
from raylab.spec.typecheck import ConfigError, check_positive, from_mapping, shorten
from raylab.spec.yamlfile import load_yaml_text, parse_yaml_text


@dataclass(frozen=True)
class OptimizerSpec:
    name: Literal["rmsprop", "adam"] = "rmsprop"
    lr: float = 1e-3
    lr_orth: float | None = None  # learning rate of log-orthogonal parameters; None: same as lr
    alpha: float = 0.99  # RMSprop smoothing (the papers' alpha)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam
    eps: float = 1e-8
    weight_decay: float = 0.0  # for parameters whose cell sets no decay of their own, within the scope below
    # which of those parameters decay (raylab.networks.optim.WEIGHT_DECAY_SCOPES): "no_bias", every one but the
    # biases (BN betas included): the IndRNN code of MNIST (PyTorch) and PTB (Theano, Lasagne's
    # regularizable params); "no_bias_no_norm" also spares normalisation scales (BN gamma), the
    # IndRNN PyTorch PTB code without --bn_decay; "all": every one, PyTorch's own `weight_decay`
    weight_decay_scope: Literal["no_bias", "no_bias_no_norm", "all"] = "no_bias"
    clip_grad_norm: float | None = None  # None: no clipping, as in the nnRNN code
    clip_grad_value: float | None = None  # element-wise clamp of every gradient to [-v, v] (IndRNN: 10)
    lr_decay_on_plateau: float | None = None  # multiply every lr by this after a non-improving evaluation (nnRNN PTB: 0.5)
    lr_decay_patience: int = 0  # ... once more than this many evaluations in a row did not improve the primary metric
    # The IndRNN schedules (raylab.networks.schedules; docs/protocol.md):
    lr_decay_patience_halving: bool = False  # the patience halves after each drop (IndRNN PyTorch code)
    lr_step_every: int | None = None  # multiply every lr by lr_step_factor every this many steps (IndRNN adding: 20,100)
    lr_step_factor: float = 0.1
    reload_best_at_drop: Literal["none", "model", "model_and_optimizer"] = "none"  # at each lr drop, go back to the best evaluation's weights (Theano) and optimizer state (PyTorch)
    lr_stop_below: float | None = None  # stop training once every lr is below this after a drop (IndRNN: 1e-6)

    def check(self, where: str) -> None:
        prefix = f"{where}." if where else ""
        check_positive(self.lr, f"{prefix}lr")
        check_positive(self.clip_grad_value, f"{prefix}clip_grad_value")
        check_positive(self.lr_decay_patience, f"{prefix}lr_decay_patience", allow_zero=True)
        if self.lr_decay_on_plateau is not None and not 0.0 < self.lr_decay_on_plateau < 1.0:
            raise ConfigError(f"{prefix}lr_decay_on_plateau: must be in (0, 1), got {self.lr_decay_on_plateau}")
        check_positive(self.lr_orth, f"{prefix}lr_orth")
        check_positive(self.lr_step_every, f"{prefix}lr_step_every")
        check_positive(self.lr_stop_below, f"{prefix}lr_stop_below")
        if not 0.0 < self.lr_step_factor < 1.0:
            raise ConfigError(f"{prefix}lr_step_factor: must be in (0, 1), got {self.lr_step_factor}")
        drops = self.lr_decay_on_plateau is not None or self.lr_step_every is not None
        for name, is_set in (("reload_best_at_drop", self.reload_best_at_drop != "none"), ("lr_stop_below", self.lr_stop_below is not None)):
            if is_set and not drops:
                raise ConfigError(f"{prefix}{name}: needs lr_decay_on_plateau or lr_step_every (it acts at each lr drop)")
        if self.lr_decay_patience_halving and self.lr_decay_on_plateau is None:
            raise ConfigError(f"{prefix}lr_decay_patience_halving: needs lr_decay_on_plateau")
        check_positive(self.eps, f"{prefix}eps")
        check_positive(self.clip_grad_norm, f"{prefix}clip_grad_norm")
        check_positive(self.weight_decay, f"{prefix}weight_decay", allow_zero=True)
        if not 0.0 <= self.alpha < 1.0:
            raise ConfigError(f"{prefix}alpha: must be in [0, 1), got {self.alpha}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{prefix}betas: each must be in [0, 1), got {list(self.betas)}")


@dataclass(frozen=True)
class TrainingSpec:
    steps: int | None = None  # training budget in optimizer steps ...
    epochs: int | None = None  # ... or in epochs (tasks with a finite training set only)
    eval_every: int = 100  # evaluate and checkpoint every this many steps (or epochs)
    precision: Literal["fp32", "tf32"] = "fp32"  # fp32: full float32 on GPUs too, as the papers; tf32: allow TensorFloat-32 matmuls and cuDNN

    def check(self, where: str) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError(f"{where}: set exactly one of steps or epochs")
        check_positive(self.steps, f"{where}.steps")
        check_positive(self.epochs, f"{where}.epochs")
        check_positive(self.eval_every, f"{where}.eval_every")


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float = 1.0
    gpu: float = 0.0  # a fraction packs several trials on one GPU (0.25: four per GPU)

    def check(self, where: str) -> None:
        check_positive(self.cpu, f"{where}.cpu")
        check_positive(self.gpu, f"{where}.gpu", allow_zero=True)
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise ConfigError(f"{where}.gpu: more than one GPU must be a whole number, got {self.gpu}")


@dataclass(frozen=True)
class VariantSpec:
    cell: dict  # {name: <cell>, <option>: <value>, ...}
    label: str | None = None  # row name in tables, e.g. "RNN-orth"; default: the cell name
    optimizer: dict = field(default_factory=dict)  # overrides of the sweep's optimizer
    hidden_sizes: list[int] | None = None  # this variant's own sizes, instead of the sweep's sizes or budget
    # (the nnRNN paper did not parameter-match EURNN: its "same params" rows just double N)

    def check(self, where: str) -> None:
        for i, size in enumerate(self.hidden_sizes or []):
            check_positive(size, f"{where}.hidden_sizes[{i}]")
        if self.hidden_sizes is not None and not self.hidden_sizes:
            raise ConfigError(f"{where}.hidden_sizes: must list at least one size")
        check_distinct(self.hidden_sizes or [], f"{where}.hidden_sizes")


@dataclass(frozen=True)
class BudgetSpec:
    """`budget: {n_params: 18900}`: each variant's hidden size is solved for this many parameters."""

    n_params: int | list[int]  # a list is one more grid axis: one hidden size per budget and variant
    rounding: Literal["floor", "nearest"] = "floor"  # floor: the largest N within budget (raylab.networks.budget)

    def targets(self) -> list[int]:
        return self.n_params if isinstance(self.n_params, list) else [self.n_params]

    def check(self, where: str) -> None:
        if not self.targets():
            raise ConfigError(f"{where}.n_params: must list at least one budget")
        for i, n in enumerate(self.targets()):
            check_positive(n, f"{where}.n_params" + (f"[{i}]" if isinstance(self.n_params, list) else ""))
        check_distinct(self.targets(), f"{where}.n_params")


@dataclass(frozen=True)
class SchedulerSpec:
    """`scheduler: {name: asha, ...}`: Ray Tune's ASHA stops poor trials early; time = training steps."""

    name: Literal["asha"] = "asha"
    grace_period: int = 100  # training steps every trial runs before it may be stopped
    reduction_factor: float = 3.0  # keep the best 1/reduction_factor at each rung

    def check(self, where: str) -> None:
        check_positive(self.grace_period, f"{where}.grace_period")
        if self.reduction_factor <= 1:
            raise ConfigError(f"{where}.reduction_factor: must be greater than 1, got {self.reduction_factor}")


DEFAULT_MAX_CONCURRENT = 4  # search.max_concurrent's default: TPE keeps learning on a cluster (docs/research.md)


@dataclass(frozen=True)
class SearchSpec:
    """`search:` sampled configurations, run by Ray Tune's search algorithm and scheduler (raylab.planning.space)."""

    space: dict  # dotted key -> {uniform: [lo, hi]} | {loguniform: [lo, hi]} | {randint: [lo, hi]} | {choice: [...]}
    num_samples: int = 8  # sampled configurations per task x variant x hidden size
    # random: independent draws (Tune's); optuna: one Optuna study per task x variant x hidden size
    # (raylab.planning.samplers), which learns from the samples that ended (TPE by default)
    algorithm: Literal["random", "optuna"] = "random"
    sampler: dict | None = None  # optuna only: {name: tpe | random, <option>: value}; null: TPE with Optuna's defaults
    max_concurrent: int | None = None  # optuna only: samples of one slot in flight at once; null: 4
    seeds_per_sample: int = 1  # each sample trains on seeds s..s+k-1 (s: the sweep's seed); the searcher is told their mean
    scheduler: SchedulerSpec | None = None  # None: every trial runs its whole budget
    metric: str | None = None  # default: the task's primary metric
    mode: Literal["min", "max"] | None = None  # default: from the metric's name (acc: max, else min)

    def check(self, where: str) -> None:
        check_positive(self.num_samples, f"{where}.num_samples")
        check_positive(self.seeds_per_sample, f"{where}.seeds_per_sample")
        if not self.space:
            raise ConfigError(f"{where}.space: must name at least one key to sample")
        for name in ("sampler", "max_concurrent"):
            if getattr(self, name) is not None and self.algorithm != "optuna":
                raise ConfigError(f"{where}.{name}: only applies to algorithm: optuna (the algorithm is {self.algorithm})")
        if self.max_concurrent is not None:
            check_positive(self.max_concurrent, f"{where}.max_concurrent")
        if self.seeds_per_sample > 1 and self.scheduler is not None:
            # ASHA decides each trial at each rung alone: it would stop a sample's seeds one by one on
            # single-seed values, the noise seeds_per_sample is there to average out (docs/research.md)
            raise ConfigError(
                f"{where}.seeds_per_sample: {self.seeds_per_sample} with a scheduler: ASHA would stop each seed on its own value, "
                "not on the sample's mean; use seeds_per_sample: 1 with a scheduler, or no scheduler"
            )

    def samples_text(self) -> str:
        """`8 samples`, or `8 samples x 3 seeds` with seeds_per_sample: what each configuration of the sweep runs."""
        return f"{self.num_samples} samples" + (f" x {self.seeds_per_sample} seeds" if self.seeds_per_sample > 1 else "")

    def concurrency(self) -> int:
        """Samples of one slot in flight at once (optuna): TPE learns only from samples that ended."""
        return self.max_concurrent if self.max_concurrent is not None else DEFAULT_MAX_CONCURRENT



FIGURE_FORMATS = (".png", ".svg", ".pdf")  # matplotlib picks the format from the extension


@dataclass(frozen=True)
class PlotSpec:
    """A figure `raylab run` draws into the sweep directory after its table: `raylab plot`'s options."""

    out: str  # file name inside <storage>/<name>/; the type follows the extension: .png, .svg or .pdf
    metrics: list[str] = field(default_factory=lambda: ["val/loss"])  # one panel each
    x: Literal["step", "epoch"] = "step"
    logy: bool = False  # log-scale y axis, as the papers' loss figures
    average: Literal["mean", "median"] = "mean"  # mean +-1 s.e., or median and interquartile band
    baseline: bool = True  # the task's trivial baseline as a dashed line

    def check(self, where: str) -> None:
        if Path(self.out).name != self.out or Path(self.out).suffix.lower() not in FIGURE_FORMATS:
            raise ConfigError(f"{where}.out: a file name ending in .png, .svg or .pdf, got {self.out!r}")
        if not self.metrics:
            raise ConfigError(f"{where}.metrics: must list at least one metric")


@dataclass(frozen=True)
class ReportSpec:
    """The HTML report `raylab run` writes into the sweep directory after its table: `raylab report`'s options."""

    out: str = "report.html"  # file name inside <storage>/<name>/
    metrics: list[str] = field(default_factory=list)  # table and curves; empty: every val/ and test/ metric
    x: Literal["step", "epoch"] = "step"
    logy: bool | None = None  # null: per metric, log when its curves span more than 1.5 decades
    stat: Literal["final", "best"] = "final"
    compare: str | None = None  # a published table beside ours: a shipped name or a YAML file
    vs: str | None = None  # a variant label: each row's difference to it, with its 95% interval

    def check(self, where: str) -> None:
        if Path(self.out).name != self.out or Path(self.out).suffix.lower() not in (".html", ".htm"):
            raise ConfigError(f"{where}.out: a file name ending in .html, got {self.out!r}")
        # `compare` names a published table: raylab.results.report.check_report_section reads it
        if importlib.util.find_spec("plotly") is None:
            raise ConfigError(f"{where}: the report needs plotly: pip install -e '.[report]'")


LOGGERS = ("tensorboard", "mlflow", "wandb")  # `loggers:` and `raylab run --logger NAME`
# logger -> (the module it needs, the extra that installs it): a missing one is one line naming the pip command
LOGGER_EXTRAS = {"tensorboard": ("tensorboardX", "tensorboard"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def check_logger_installed(logger: str, where: str) -> None:
    module, extra = LOGGER_EXTRAS[logger]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{where}: {logger} needs {module}: pip install -e '.[{extra}]'")


@dataclass(frozen=True)
class MlflowSpec:
    """`mlflow:` where `loggers: [mlflow]` writes (docs/trackers.md); every field has a default."""

    # None: $MLFLOW_TRACKING_URI, else a SQLite file in the sweep folder, sqlite:///<storage>/<name>/mlflow.db
    tracking_uri: str | None = None
    experiment_name: str | None = None  # None: the sweep's name (with --smoke, <name>-smoke)

    def check(self, where: str) -> None:
        uri = self.tracking_uri
        if uri is not None and ("://" not in uri or uri.startswith("file:")) and uri not in ("databricks", "databricks-uc"):
            raise ConfigError(
                f"{where}.tracking_uri: {shorten(repr(uri))} is a folder (MLflow's deprecated file store); "
                "give a database or server URI, e.g. sqlite:///path/mlflow.db or http://host:5000"
            )
        if self.experiment_name is not None and not self.experiment_name.strip():
            raise ConfigError(f"{where}.experiment_name: must not be empty")


@dataclass(frozen=True)
class WandbSpec:
    """`wandb:` how `loggers: [wandb]` logs (docs/trackers.md); every field has a default."""

    mode: Literal["offline", "online"] = "offline"  # offline: files in <storage>/<name>/wandb, no account; `wandb sync` uploads them
    project: str = "raylab"  # each trial is a run of this project, grouped by the sweep's name
    entity: str | None = None  # None: the account's default entity (online only)

    def check(self, where: str) -> None:
        if not self.project.strip() or any(c in self.project for c in "/\\#?%:"):
            raise ConfigError(f"{where}.project: {self.project!r} is not a W&B project name (no / \\ # ? % :)")


def check_storage_location(location: str, where: str) -> None:
    """A storage URI is a scheme and a path, nothing after them. pyarrow would read options from a
    query (`s3://b/p?endpoint_override=...`), but raylab appends folder names to the location, which
    would land inside the query; the endpoint of an S3-compatible store is set the standard way
    (`AWS_ENDPOINT_URL`, docs/cluster.md), where every tool reads it."""
    if "://" in location and ("?" in location or "#" in location):
        raise ConfigError(
            f"{where}: {location}: options in a storage URI ('?' or '#') are not supported; "
            "set AWS_ENDPOINT_URL for an S3-compatible endpoint (docs/cluster.md)"
        )


@dataclass(frozen=True)
class SweepSpec:
    name: str
    task: dict | list[dict]  # {name: <task>, <option>: <value>, ...}, or a list of them: one more grid axis
    variants: list[VariantSpec]
    seeds: list[int]
    training: TrainingSpec
    hidden_sizes: list[int] | None = None
    budget: BudgetSpec | None = None  # instead of hidden_sizes: solve each variant's size for a parameter count
    optimizer: OptimizerSpec = OptimizerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    max_failures: int = 0  # Ray Tune retries of a failed trial, resumed from its last checkpoint
    keep_checkpoints: int = 1  # checkpoints kept per trial, the newest ones: a resume uses only the newest
    storage: str = "results"  # experiments go to <storage>/<name>/; a path, s3:// or gs://
    description: str = ""
    grid: dict = field(default_factory=dict)  # extra grid axes: dotted key -> list of values (raylab.planning.space)
    search: SearchSpec | None = None  # sampled configurations instead of (or besides) the grid
    plot: list[PlotSpec] = field(default_factory=list)  # figures drawn at the end of `raylab run`
    report: ReportSpec | None = None  # the HTML report written at the end of `raylab run` (and `resume`)
    # Tune logger callbacks besides result.json (which raylab reads): opt-in, since each costs the
    # driver time per report (docs/throughput.md) and nothing in raylab reads what they write.
    loggers: list[Literal["tensorboard", "mlflow", "wandb"]] = field(default_factory=list)
    mlflow: MlflowSpec | None = None  # where `loggers: [mlflow]` writes; None: the defaults of MlflowSpec
    wandb: WandbSpec | None = None  # how `loggers: [wandb]` logs; None: the defaults of WandbSpec

    def check(self, where: str) -> None:
        check_sweep_name(self.name)
        if isinstance(self.task, list) and not self.task:
            raise ConfigError("task: must be a task spec or a non-empty list of them")
        if not self.variants:
            raise ConfigError("variants: must list at least one variant")
        if not self.seeds:
            raise ConfigError("seeds: must list at least one seed")
        check_seeds(self.seeds)
        if (self.hidden_sizes is None) == (self.budget is None):
            raise ConfigError("hidden_sizes: set exactly one of hidden_sizes or budget")
        if self.hidden_sizes is not None and not self.hidden_sizes:
            raise ConfigError("hidden_sizes: must list at least one size")
        for i, size in enumerate(self.hidden_sizes or []):
            check_positive(size, f"hidden_sizes[{i}]")
        check_distinct(self.hidden_sizes or [], "hidden_sizes")
        check_positive(self.max_failures, "max_failures", allow_zero=True)
        check_positive(self.keep_checkpoints, "keep_checkpoints")
        check_storage_location(self.storage, "storage")
        self.check_loggers()
        outs = [figure.out for figure in self.plot]
        for i, out in enumerate(outs):
            if out in outs[:i]:
                raise ConfigError(f"plot[{i}].out: {out} is also plot[{outs.index(out)}]'s file; the second figure would replace the first")
        labels = [self.variant_label(i) for i in range(len(self.variants))]
        if self.report is not None and self.report.vs is not None and self.report.vs not in labels:
            raise ConfigError(f"report.vs: no variant {self.report.vs!r} (variants: {', '.join(dict.fromkeys(labels))})")
        if self.report is not None and self.report.vs is not None and self.search is not None:
            # every sample is its own row: each row would have several reference rows and no difference
            raise ConfigError("report.vs: in a search every sample is its own row, so the reference variant has no single row; compare its winners: `raylab best`, then `vs` in the promoted sweep")
        if self.search is not None and len(self.seeds) > 1:
            raise ConfigError(
                f"seeds: a search draws its samples from one seed, got {len(self.seeds)}; "
                "train each sample on several with search.seeds_per_sample, or promote the winners to fresh seeds with `raylab best`"
            )
        if self.search is not None and self.seeds[0] + self.search.seeds_per_sample > SEED_LIMIT:
            raise ConfigError(f"search.seeds_per_sample: seeds {self.seeds[0]}..{self.seeds[0] + self.search.seeds_per_sample - 1} pass 2**32 - 1 (the seed limit)")

    def check_loggers(self) -> None:
        for i, logger in enumerate(self.loggers):
            if logger in self.loggers[:i]:
                raise ConfigError(f"loggers[{i}]: {logger} is listed twice")
            check_logger_installed(logger, f"loggers[{i}]")
        for section in ("mlflow", "wandb"):
            if getattr(self, section) is not None and section not in self.loggers:
                raise ConfigError(f"{section}: set, but loggers does not list {section} (add it, or run with --logger {section})")
        bucket = "://" in self.storage and not self.storage.startswith("file://")
        if bucket and "mlflow" in self.loggers and self.mlflow_tracking_uri() is None:
            raise ConfigError(
                f"loggers[{self.loggers.index('mlflow')}]: mlflow's default store is a SQLite file in the sweep folder, which cannot "
                f"live in {self.storage}; set mlflow.tracking_uri (a server, or sqlite:///a/local/path.db) or MLFLOW_TRACKING_URI"
            )
        if bucket and "wandb" in self.loggers and self.wandb_spec().mode == "offline":
            raise ConfigError(
                f"loggers[{self.loggers.index('wandb')}]: wandb offline writes its files into the sweep folder, which cannot be "
                f"{self.storage}; set wandb.mode: online (or use a local storage)"
            )

    def mlflow_tracking_uri(self) -> str | None:
        """The sweep file's tracking URI, else $MLFLOW_TRACKING_URI, else None (the SQLite file in the sweep folder)."""
        return (self.mlflow.tracking_uri if self.mlflow else None) or os.environ.get("MLFLOW_TRACKING_URI") or None

    def wandb_spec(self) -> WandbSpec:
        return self.wandb or WandbSpec()

    def task_specs(self) -> list[dict]:
        return self.task if isinstance(self.task, list) else [self.task]

    def variant_label(self, index: int) -> str:
        variant = self.variants[index]
        return variant.label or str(variant.cell.get("name"))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`training.steps=50` -> (["training", "steps"], 50); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {shorten(repr(text))}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override {shorten(repr(text))}: value is not valid YAML") from None
    return key.split("."), value


def apply_override(data: dict, path: list[str], value: Any, text: str) -> None:
    """Set `data[path]`, indexing lists by number (`variants.0.cell.nonlinearity=tanh`)."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        where = ".".join(path[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {shorten(repr(text))}: {where}: no list item {part!r}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"override {shorten(repr(text))}: {'.'.join(path[:depth])} is not a mapping or list")


def read_sweep_file(path: str | Path, text: str | None = None) -> dict:
    """The data of a sweep file; with `text`, of that text as the file at `path` (checked before it is written)."""
    path = Path(path)
    if text is not None:
        data = parse_yaml_text(text, path)
    else:
        try:
            exists = path.is_file()
        except OSError as error:  # e.g. a name longer than the file system allows
            raise ConfigError(f"{path}: no such sweep file ({error.strerror})") from None
        if not exists:
            raise ConfigError(f"{path}: no such sweep file")
        data = load_yaml_text(path)  # UTF-8, no duplicate keys, sane nesting, finite numbers
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def parse_sweep(data: dict) -> SweepSpec:
    """Validate the structure and types of a sweep (cells and tasks are checked in `sweep.py`)."""
    if "seeds" in data:
        data = {**data, "seeds": expand_seeds(data["seeds"])}
    return from_mapping(SweepSpec, data, "")


def merged_optimizer(sweep: SweepSpec, index: int) -> OptimizerSpec:
    """The sweep's optimizer with variant `index`'s overrides applied and validated."""
    base = dataclasses.asdict(sweep.optimizer)
    return from_mapping(OptimizerSpec, {**base, **sweep.variants[index].optimizer}, f"variants[{index}].optimizer")


def dump(spec: Any) -> Any:
    """Plain data (dicts, lists, numbers) of a spec, for YAML, JSON and Tune configs."""
    if dataclasses.is_dataclass(spec):
        return {f.name: dump(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
    if isinstance(spec, (list, tuple)):
        return [dump(v) for v in spec]
    if isinstance(spec, dict):
        return {k: dump(v) for k, v in spec.items()}
    return spec
