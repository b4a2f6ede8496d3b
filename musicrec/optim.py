"""The optimizer of a run: the configured one (``train.optimizer``) for the dense parameters and, for a model with
sparse tables, ``torch.optim.SparseAdam`` for them, stepped together as one ``CompositeOptimizer``.

A model names its sparse tables with ``sparse_parameters()`` (``musicrec.models``: the big embedding tables with
``model.sparse: true``, and the GRU's output rows with the sampled softmax): their gradients are sparse (only the
rows a batch touched), so neither the backward pass, the update nor, with several workers, the gradient exchange
costs O(vocabulary) per step. ``SparseAdam`` is Adam applied lazily: a row's moments and value change only in the
steps that touch it (TensorFlow's LazyAdam). Measured (benchmarks/RESULTS_step.md): the GRU's step at 718k songs
takes 0.054 s with it against 8.2 s with dense Adam, at the same demo quality. It keeps two moments per table entry
(3.7 GB for the GRU at 718k songs; peak RSS 5.5 GiB); DLRM/TorchRec's row-wise Adagrad would keep one number per row,
should that memory ever matter.

With ``train.optimizer: adamw`` and ``train.weight_decay``, the sparse tables get ``SparseAdamW``: SparseAdam plus
AdamW's decoupled weight decay applied lazily, to the rows a step touches (as TensorFlow's decoupled weight decay does
on sparse updates), so the decay costs O(batch) too.

``CompositeOptimizer`` has what the rest of the project asks of an optimizer: ``param_groups`` (GradScaler's
unscale), ``zero_grad``, ``step``, ``state_dict`` / ``load_state_dict`` (checkpoints, ``--resume``, the Horovod
broadcast: one entry per part), and ``synchronize`` / ``skip_synchronize`` once ``musicrec.distributed.horovod`` has
wrapped each part in a ``hvd.DistributedOptimizer``. ``clip_grad_norm`` is ``torch.nn.utils.clip_grad_norm_`` that
also takes sparse gradients (torch's raises on them).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterable, Mapping

import torch
from torch import nn

from musicrec.config import ConfigError

if TYPE_CHECKING:  # musicrec.train imports this module
    from musicrec.train.config import TrainConfig

DENSE, SPARSE = "dense", "sparse"  # the parts of a CompositeOptimizer


class CompositeOptimizer:
    """Named optimizers over disjoint parameters, stepped as one (see the module docstring)."""

    def __init__(self, parts: Mapping[str, torch.optim.Optimizer]):
        assert parts, "a CompositeOptimizer needs at least one part"
        self.parts = dict(parts)

    @property
    def param_groups(self) -> list[dict]:
        return [group for part in self.parts.values() for group in part.param_groups]

    def params(self, part: str) -> list[nn.Parameter]:
        """The parameters of one part ([] when there is no such part)."""
        groups = self.parts[part].param_groups if part in self.parts else []
        return [p for group in groups for p in group["params"]]

    def zero_grad(self) -> None:  # no argument: Horovod's DistributedOptimizer.zero_grad takes none
        for part in self.parts.values():
            part.zero_grad()

    def step(self, closure=None) -> None:
        assert closure is None, "CompositeOptimizer.step takes no closure"
        for part in self.parts.values():
            part.step()

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: Mapping) -> None:
        if set(state) != set(self.parts):
            raise ValueError(f"optimizer state has the parts {sorted(state)}, this optimizer {sorted(self.parts)}")
        for name, part in self.parts.items():
            part.load_state_dict(state[name])

    # distributed: what musicrec.distributed.horovod calls once each part is a hvd.DistributedOptimizer
    def synchronize(self) -> None:
        for part in self.parts.values():
            part.synchronize()

    @contextlib.contextmanager
    def skip_synchronize(self):
        with contextlib.ExitStack() as stack:
            for part in self.parts.values():
                stack.enter_context(part.skip_synchronize())
            yield


class SparseAdamW(torch.optim.SparseAdam):
    """``SparseAdam`` with decoupled weight decay on the rows each step's sparse gradient names: before the Adam
    update, those rows are multiplied by ``1 - lr * weight_decay`` (``torch.optim.AdamW``'s decay, made lazy)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        self.defaults["weight_decay"] = weight_decay
        for group in self.param_groups:
            group.setdefault("weight_decay", weight_decay)  # Horovod re-creates the optimizer from its param_groups

    def __setstate__(self, state):  # load_state_dict: a SparseAdam checkpoint's groups have no weight_decay
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("weight_decay", self.defaults.get("weight_decay", 0.0))

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "SparseAdamW.step takes no closure"
        for group in self.param_groups:
            factor = 1.0 - group["lr"] * group["weight_decay"]
            if factor == 1.0:
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("SparseAdamW takes sparse gradients only (nn.Embedding(sparse=True))")
                p.grad = p.grad.coalesce()  # once: SparseAdam then finds it coalesced
                rows = p.grad.indices()[0]  # (touched rows,)
                p.index_copy_(0, rows, p.index_select(0, rows) * factor)
        return super().step()


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's parameters with sparse gradients (``model.sparse_parameters()``; none for a model without it)."""
    return list(getattr(model, "sparse_parameters", lambda: [])())


def make_optimizer(model: nn.Module, config: "TrainConfig") -> torch.optim.Optimizer | CompositeOptimizer:
    """``config.optimizer`` over the model's trainable parameters; with sparse tables, a ``CompositeOptimizer`` of
    that optimizer (the dense parameters) and ``SparseAdam`` at ``config.lr`` (the sparse ones; ``SparseAdamW`` with
    ``adamw`` and a weight decay). Sparse tables need lr > 0, and weight decay only with ``adamw`` (decoupled, lazy):
    anything else is a ``ConfigError``."""
    sparse = [p for p in sparse_parameters(model) if p.requires_grad]
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    if not sparse:
        return _dense_optimizer(dense, config)
    if config.weight_decay and config.optimizer != "adamw":
        raise ConfigError(f"train.weight_decay = {config.weight_decay} with train.optimizer = {config.optimizer}: the "
                          "model's sparse tables (model.sparse: true) take only decoupled weight decay; set "
                          "train.optimizer: adamw (decoupled values are not Adam's L2 ones: AdamW's are typically "
                          "1e-2 to 1e-1), train.weight_decay: 0 or model.sparse: false")
    if config.lr <= 0:
        raise ConfigError(f"train.lr = {config.lr}: SparseAdam (model.sparse: true) needs a learning rate > 0")
    parts = {DENSE: _dense_optimizer(dense, config)} if dense else {}
    decay = config.weight_decay if config.optimizer == "adamw" else 0.0
    if decay:
        parts[SPARSE] = SparseAdamW(sparse, lr=config.lr, weight_decay=decay)
    else:
        parts[SPARSE] = torch.optim.SparseAdam(sparse, lr=config.lr)
    return CompositeOptimizer(parts)


def _dense_optimizer(params: list[nn.Parameter], config: "TrainConfig") -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``; the norm before clipping.

    Only dense gradients: ``torch.nn.utils.clip_grad_norm_`` itself. With sparse gradients: each is coalesced first
    (a row looked up twice holds two entries whose sum is its gradient), then the same formula as torch's
    (coefficient ``max_norm / (norm + 1e-6)``, at most 1)."""
    params = [p for p in parameters if p.grad is not None]
    if not any(p.grad.is_sparse for p in params):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    for p in params:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
    values = [p.grad._values() if p.grad.is_sparse else p.grad for p in params]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v.detach(), 2.0) for v in values]), 2.0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for v in values:
        v.detach().mul_(coef.to(v.device, v.dtype))
    return total


def fill_missing_sparse_grads(optimizer) -> None:
    """Give every sparse parameter without a gradient an EMPTY sparse one. distributed: a worker whose shard is used
    up steps without a batch; Horovod would give such a parameter a dense zero gradient (V x D, allreduced) while the
    other workers allgather sparse ones under the same name."""
    if not isinstance(optimizer, CompositeOptimizer):
        return
    for p in optimizer.params(SPARSE):
        if p.grad is None:
            p.grad = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.long, device=p.device),
                                             p.new_zeros((0, *p.shape[1:])), p.shape,
                                             check_invariants=False)


__all__ = ["CompositeOptimizer", "DENSE", "SPARSE", "SparseAdamW", "clip_grad_norm", "fill_missing_sparse_grads",
           "make_optimizer", "sparse_parameters"]
