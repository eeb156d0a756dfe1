"""`ppokit verify`: check PPO's implementation details on the real objects a config builds.

`build(cfg)` makes what `ppokit train` makes (env, model, PPO) and runs one real rollout and one
real update on it; `check(objects)` then derives every finding from those objects: the
optimizer's epsilon, the singular values of each initialised layer, the distribution's
parameters, what the minibatches of the update contained, the gradient norms the optimizer
stepped with, the clip range the value loss shows, the advantage a truncated episode gets, how
the LR schedule reacts to KL, the EMA's trailing factor, the dtype the update computes in. The
expected column is what the config asks for, with the usual PPO value in the detail where it
differs by choice. A row fails when the objects disagree with it; `ppokit verify` exits non-zero
then.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ppokit.algo.loss import MinibatchReport, evaluate_minibatch, loss_settings, ppo_loss
from ppokit.algo.ppo import PPO
from ppokit.algo.rollout import Minibatch
from ppokit.config import TrainConfig, copy_config, minibatch_size
from ppokit.device import set_threads
from ppokit.envs import make_env
from ppokit.envs.base import StepResult, VecEnv
from ppokit.nn.actor_critic import POLICY_HEAD_GAIN, VALUE_HEAD_GAIN, ActorCritic
from ppokit.nn.distributions import DiagGaussian
from ppokit.nn.encoders import HIDDEN_GAIN, MLP
from ppokit.observations import obs_map

TOL = 1e-4


@dataclass
class Row:
    detail: str
    expected: str
    found: str
    ok: bool


@dataclass
class Objects:
    """What `build` made and observed: the config, env, model, PPO, and a record of one update."""

    cfg: TrainConfig
    env: VecEnv
    model: ActorCritic
    ppo: PPO
    fresh_model: ActorCritic  # the model as initialised, before the probe update
    minibatches: list[dict] = field(default_factory=list)  # per gradient step of the update
    first_minibatch: Minibatch | None = None  # the update's first (flat, or sequences)
    rollout: dict = field(default_factory=dict)  # what the probe rollout stored
    ema_before: list[torch.Tensor] | None = None


def build(cfg: TrainConfig, device: str | torch.device = "cpu") -> Objects:
    """The objects of `cfg` (eager update: the compiled step computes the same step, tested
    apart), one real rollout and one real update, with what each gradient step saw."""
    cfg = copy_config(cfg)
    cfg.algo.compile = False
    device = torch.device(device)
    set_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    env = make_env(cfg.env, device)
    model = ActorCritic(
        env.observation_space,
        env.action_space,
        cfg.policy,
    ).to(device)
    fresh = copy.deepcopy(model)
    ppo = PPO(model, cfg, device, total_updates=10)
    objects = Objects(cfg, env, model, ppo, fresh)
    obs = env.reset(seed=cfg.seed)
    ppo.reset_memory()
    while not ppo.rollout_full:
        step = env.step(ppo.act(obs))
        ppo.record(step)
        obs = step.obs
    ppo.finish_rollout(obs)
    b = ppo.buffer
    objects.rollout = {
        "obs": obs_map(lambda x: x.clone(), b.obs),
        "advantages": b.advantages.clone(),
    }
    if ppo.ema is not None:
        objects.ema_before = [p.detach().clone() for p in ppo.ema.model.parameters()]
    _record_update(objects)
    return objects


def _record_update(objects: Objects) -> None:
    """Run PPO.update with an observer that records each minibatch and the norm of the gradient
    each step applied."""

    def record(report: MinibatchReport) -> None:
        mb = report.minibatch
        if objects.first_minibatch is None:
            objects.first_minibatch = mb
        advantages = mb.advantages if mb.mask is None else mb.advantages[mb.mask]
        objects.minibatches.append(
            {
                "size": mb.actions.shape[1 if mb.states is not None else 0],
                "advantages": advantages.detach().clone(),
                "grad_norm": None if report.grad_norm is None else float(report.grad_norm),
                "stepped": report.stepped,
            }
        )

    objects.ppo.update(observers=[record])


def _rescored(model: ActorCritic, mb: Minibatch) -> Minibatch:
    """A probe made of `mb` (a minibatch of the update: flat, or sequences run through the
    memory as the loss runs them): the log-probs and values `model` gives it, zero advantages,
    returns equal to the values, no EMA weights. The checks shift what they probe."""
    with torch.no_grad():
        log_probs, _, values = evaluate_minibatch(model, mb)
    return dataclasses.replace(
        mb,
        log_probs=log_probs,
        values=values,
        advantages=torch.zeros_like(values),
        returns=values,
        weights=None,
    )


# ----------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------


def check(objects: Objects) -> list[Row]:
    """Every detail that applies to these objects, as rows."""
    rows: list[Row] = []
    for fn in CHECKS:
        rows.extend(fn(objects))
    return rows


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def check_optimizer(o: Objects) -> list[Row]:
    a = o.cfg.algo
    group = o.ppo.optimizer.param_groups[0]
    kind = type(o.ppo.optimizer).__name__
    want = "AdamW" if a.optimizer == "adamw" else "Adam"
    return [
        Row("optimizer", want, kind, kind == want),
        Row(
            "Adam epsilon (PPO: 1e-5)",
            _fmt(a.adam_eps),
            _fmt(group["eps"]),
            math.isclose(group["eps"], a.adam_eps, rel_tol=1e-9),
        ),
    ]


def _singular_values(layer: nn.Linear) -> torch.Tensor:
    return torch.linalg.svdvals(layer.weight.detach().double().cpu())


def _gain_row(detail: str, layers: list[nn.Linear], gain: float) -> Row:
    values = torch.cat([_singular_values(layer) for layer in layers])
    lo, hi = float(values.min()), float(values.max())
    biases = max(float(layer.bias.detach().abs().max()) for layer in layers)
    ok = abs(lo - gain) < TOL and abs(hi - gain) < TOL and biases == 0.0
    return Row(
        detail,
        f"singular values {_fmt(gain)}, bias 0",
        f"singular values {_fmt(lo)}..{_fmt(hi)}, |bias| <= {_fmt(biases)}",
        ok,
    )


def check_init(o: Objects) -> list[Row]:
    m = o.fresh_model
    rows = []
    hidden: list[nn.Linear] = []
    for net in (m.actor, m.critic):
        if isinstance(net, MLP):
            hidden.extend(net.layers[:-1])
    if hidden:
        rows.append(_gain_row("orthogonal init, hidden layers (gain sqrt 2)", hidden, HIDDEN_GAIN))
    rows.append(_gain_row("orthogonal init, policy head", [m.actor.layers[-1]], POLICY_HEAD_GAIN))
    rows.append(_gain_row("orthogonal init, value head", [m.critic.layers[-1]], VALUE_HEAD_GAIN))
    return rows


def check_action_std(o: Objects) -> list[Row]:
    m, p = o.fresh_model, o.cfg.policy
    dist = m.distribution
    if not isinstance(dist, DiagGaussian):
        return []
    head_out = m.actor.layers[-1].out_features
    is_param = isinstance(dist.log_std, nn.Parameter) and dist.log_std.shape == (dist.action_dim,)
    rows = [
        Row(
            "state-independent log-std",
            f"a parameter [{dist.action_dim}]; head outputs the mean only",
            f"{'a parameter' if is_param else type(dist.log_std).__name__}"
            f" {list(dist.log_std.shape)}; head outputs {head_out}",
            is_param and head_out == dist.action_dim,
        )
    ]
    space = m.action_space
    width = torch.as_tensor(space.high - space.low, dtype=torch.float64)
    width = torch.where(width.isfinite(), width, 2.0)  # an unbounded dimension counts as [-1, 1]
    want = (
        p.init_noise_std * width
        if p.noise_std_relative
        else torch.full_like(width, p.init_noise_std)
    )
    got = m.action_std().detach().double().cpu()
    how = f"{p.init_noise_std:g} x (high - low)" if p.noise_std_relative else "absolute"
    rows.append(
        Row(
            f"initial action std, env units ({how})",
            ", ".join(_fmt(x) for x in want.tolist()),
            ", ".join(_fmt(x) for x in got.tolist()),
            bool(torch.allclose(got, want, rtol=1e-5)),
        )
    )
    return rows


def check_normalizer(o: Objects) -> list[Row]:
    keys = [k for k in o.model.state_dict() if k.startswith("obs_normalizer.") and "rms.mean" in k]
    enabled = o.cfg.policy.normalize_obs
    counts = [v for k, v in o.model.state_dict().items() if k.endswith("rms.count")]
    merged = max((float(c) for c in counts), default=0.0)
    rollout = o.cfg.algo.num_steps * o.cfg.env.num_envs
    if enabled:
        expected = f"in the model's state_dict, {rollout} samples merged after the update"
        ok = bool(keys) and merged == rollout
    else:
        expected = "off"
        ok = merged == 0.0
    found = f"{len(keys)} normalizer(s) in the state_dict, {merged:g} samples merged"
    return [Row("observation normalization inside the model", expected, found, ok)]


def check_minibatches(o: Objects) -> list[Row]:
    a = o.cfg.algo
    want = minibatch_size(o.cfg)
    unit = "sequences" if o.ppo.recurrent else "samples"
    sizes = sorted({mb["size"] for mb in o.minibatches})
    steps = len(o.minibatches)
    total = o.ppo.buffer.num_envs * (
        -(-a.num_steps // a.bptt_length) if o.ppo.recurrent else a.num_steps
    )
    planned = total // want * a.num_epochs
    early = any(not mb["stepped"] for mb in o.minibatches)
    ok = sizes == [want] and (steps == planned or early)
    return [
        Row(
            "minibatches",
            f"{want} {unit} each, {planned} gradient steps ({a.num_epochs} epochs)",
            f"{', '.join(map(str, sizes))} {unit} each, {steps} gradient steps"
            + (" (KL stop)" if early else ""),
            ok,
        )
    ]


def check_advantages(o: Objects) -> list[Row]:
    a = o.cfg.algo
    per_epoch = max(1, len(o.minibatches) // a.num_epochs)
    seen = torch.cat([mb["advantages"].flatten() for mb in o.minibatches[:per_epoch]]).double()
    mean, std = float(seen.mean()), float(seen.std())
    found = f"minibatches see mean {mean:+.3g}, std {std:.4g}"
    in_loss = o.ppo.loss_kwargs["normalize_minibatch_advantages"]
    if a.normalize_advantages and a.advantage_norm_scope == "batch":
        expected = "normalized over the whole batch (mean 0, std 1)"
        ok = abs(mean) < 1e-3 and abs(std - 1.0) < 1e-3 and not in_loss
        scope = "batch"
    else:
        raw = o.rollout["advantages"].double().flatten()
        raw_mean, raw_std = float(raw.mean()), float(raw.std())
        scope = "minibatch" if a.normalize_advantages else "off"
        expected = "the rollout's, " + (
            "normalized per minibatch in the loss" if a.normalize_advantages else "not normalized"
        )
        found += f" (rollout: {raw_mean:+.3g}, {raw_std:.4g})"
        found += "; the loss normalizes" if in_loss else "; the loss takes them as they are"
        ok = (
            abs(mean - raw_mean) < 1e-4 * max(1.0, abs(raw_mean))
            and abs(std - raw_std) < 1e-4 * max(1.0, raw_std)
            and in_loss == a.normalize_advantages
        )
    return [Row(f"advantage normalization ({scope})", expected, found, ok)]


def check_grad_clip(o: Objects) -> list[Row]:
    """The largest gradient norm the update stepped with, and the norm a probe step on a copy
    steps with when its raw gradient is made huge (advantages and returns x 1e4)."""
    limit = o.cfg.algo.max_grad_norm
    norms = [mb["grad_norm"] for mb in o.minibatches if mb["grad_norm"] is not None]
    found = f"update: largest {_fmt(max(norms))}" if norms else "update: no gradient step"
    probe = None
    if o.first_minibatch is not None:
        ppo = copy.deepcopy(o.ppo)
        mb = _rescored(ppo.model, o.first_minibatch)
        mb.advantages = 1e4 * torch.randn_like(mb.values)
        mb.returns = mb.values + mb.advantages
        applied: list[float] = []
        ppo.minibatch_step(mb, observers=[lambda r: applied.append(float(r.grad_norm))])
        probe = applied[0]
        found += f"; probe with a huge gradient: {_fmt(probe)}"
    if limit > 0:
        ok = bool(norms) and max(norms) <= limit * (1 + 1e-4)
        if probe is not None:
            ok = ok and abs(probe - limit) <= 1e-3 * limit
        return [Row("gradient clipping (global norm)", f"<= {limit:g}", found, ok)]
    ok = probe is None or probe > 1.0
    return [Row("gradient clipping", "off", found, ok)]


def check_value_clip(o: Objects) -> list[Row]:
    """The value loss of a minibatch of the update whose new values sit 1 above the old ones and
    1 below the returns: unclipped 0.5, clipped at c 0.5 (2 - c)^2. The clip range is read off
    the loss."""
    if o.first_minibatch is None:
        return [Row("value loss clipping", "a gradient step", "the update made none", False)]
    model = o.fresh_model
    mb = _rescored(model, o.first_minibatch)
    mb.values, mb.returns = mb.values - 1.0, mb.values + 1.0
    with torch.no_grad():
        terms = ppo_loss(model, mb, **o.ppo.loss_kwargs)
    loss = float(terms.value_loss)
    clipped = loss > 0.5 + 1e-4
    found_clip = 2.0 - math.sqrt(2.0 * loss) if clipped else None
    want = loss_settings(o.cfg.algo)["value_clip_coef"]  # the range the config asks for
    if want is not None:
        return [
            Row(
                "value loss clipping",
                f"clipped at {want:g} around the old values",
                f"clipped at {_fmt(found_clip)}" if clipped else "unclipped",
                found_clip is not None and abs(found_clip - want) < 1e-3,
            )
        ]
    return [
        Row(
            "value loss clipping",
            "off",
            f"clipped at {_fmt(found_clip)}" if clipped else "unclipped",
            not clipped,
        )
    ]


def check_truncation(o: Objects) -> list[Row]:
    """Feed a copy of PPO a rollout whose env 0 is truncated at step 0 with two different final
    observations: the advantage of that step moves by gamma * (V(final A) - V(final B)) when
    truncation bootstraps, and not at all when it is treated as termination."""
    a = o.cfg.algo
    obs = o.rollout["obs"]
    T = o.ppo.buffer.num_steps

    def advantage(final_step: int) -> tuple[float, float]:
        ppo = copy.deepcopy(o.ppo)
        ppo.buffer.reset()
        ppo.reset_memory()
        N = ppo.num_envs
        for t in range(T):
            ppo.act(obs_map(lambda x, t=t: x[t], obs))
            truncated = torch.zeros(N, dtype=torch.bool, device=ppo.device)
            final = None
            if t == 0:
                truncated[0] = True
                final = obs_map(lambda x: x[final_step].clone(), obs)
            nxt = obs_map(lambda x, t=t: x[min(t + 1, T - 1)], obs)
            ppo.record(
                StepResult(
                    nxt,
                    torch.zeros(N, device=ppo.device),
                    torch.zeros(N, dtype=torch.bool, device=ppo.device),
                    truncated,
                    final,
                )
            )
        ppo.finish_rollout(obs_map(lambda x: x[T - 1], obs))
        # V(final obs) as record() computed it (recurrent: with the state of step 0).
        return float(ppo.buffer.advantages[0, 0]), float(ppo.buffer.bootstrap_values[0, 0])

    if T < 3:
        return []
    adv_a, v_a = advantage(1)
    adv_b, v_b = advantage(2)
    moved = adv_a - adv_b
    finite = o.cfg.env.finite_horizon
    want = 0.0 if finite else a.gamma * (v_a - v_b)
    expected = (
        "no bootstrap (env.finite_horizon: truncation is termination)"
        if finite
        else "bootstraps: A moves by gamma x dV(final obs)"
    )
    found = f"A moved by {moved:+.4g} for gamma x dV(final obs) = {a.gamma * (v_a - v_b):+.4g}"
    ok = abs(moved - want) < 1e-4 * max(1.0, abs(a.gamma * (v_a - v_b)))
    if abs(v_a - v_b) < 1e-6:
        ok, found = False, "V(final obs) did not differ between the probes (inconclusive)"
    return [Row("truncated episodes", expected, found, ok)]


def check_schedule(o: Objects) -> list[Row]:
    a = o.cfg.algo
    schedule = copy.deepcopy(o.ppo.schedule)
    if schedule.adaptive:
        assert a.target_kl is not None
        lrs = [schedule.after_kl(0.0) for _ in range(200)]
        high = max(lrs)
        lrs = [schedule.after_kl(10 * a.target_kl) for _ in range(400)]
        low = min(lrs)
        mid = math.sqrt(a.min_lr * a.max_lr)  # room to move both ways
        schedule.lr = mid
        up = schedule.after_kl(0.49 * a.target_kl) / mid
        schedule.lr = mid
        down = mid / schedule.after_kl(2.01 * a.target_kl)
        schedule.lr = mid
        hold = schedule.after_kl(a.target_kl) / mid
        expected = (
            f"KL-adaptive in [{a.min_lr:g}, {a.max_lr:g}], x/÷ {a.lr_factor:g} outside"
            f" [{0.5 * a.target_kl:g}, {2 * a.target_kl:g}]"
        )
        found = f"in [{low:g}, {high:g}], x {up:.4g} / ÷ {down:.4g}, {hold:g} at target"
        ok = (
            math.isclose(low, a.min_lr)
            and math.isclose(high, a.max_lr)
            and math.isclose(up, a.lr_factor)
            and math.isclose(down, a.lr_factor)
            and hold == 1.0
        )
        return [Row("learning-rate schedule", expected, found, ok)]
    start, end = schedule.at_update(0), schedule.at_update(schedule.total_updates)
    want_end = {"constant": a.lr, "linear": 0.0, "cosine": a.lr * a.lr_floor}[a.lr_schedule]
    return [
        Row(
            "learning-rate schedule",
            f"{a.lr_schedule}: {a.lr:g} -> {want_end:g}",
            f"{start:g} -> {end:g}",
            math.isclose(start, a.lr) and math.isclose(end, want_end, abs_tol=1e-12),
        )
    ]


def check_kl_stop(o: Objects) -> list[Row]:
    a = o.cfg.algo
    ppo = copy.deepcopy(o.ppo)
    if a.target_kl is None:
        stops = not ppo.kl_allows_step(1e9)
        return [Row("KL early stop", "off", "stops" if stops else "never stops", not stops)]
    above = not ppo.kl_allows_step(a.target_kl * 1.01)
    below = not ppo.kl_allows_step(a.target_kl * 0.99)
    found = (
        f"{'stops' if above else 'continues'} above target,"
        f" {'stops' if below else 'continues'} below"
    )
    if a.kl_early_stop:
        expected = f"ends the update at KL > {a.target_kl:g}"
        return [Row("KL early stop", expected, found, above and not below)]
    return [Row("KL early stop", "off", found, not above and not below)]


def check_ema(o: Objects) -> list[Row]:
    decay = o.cfg.ema.decay
    ppo = o.ppo
    if decay == 0:
        return [
            Row(
                "rollout policy",
                "the trained model",
                "the trained model" if ppo.acting_model is ppo.model else "another model",
                ppo.acting_model is ppo.model,
            )
        ]
    assert ppo.ema is not None and o.ema_before is not None
    before = torch.cat([p.flatten() for p in o.ema_before])
    after = torch.cat([p.detach().flatten() for p in ppo.ema.model.parameters()])
    target = torch.cat([p.detach().flatten() for p in ppo.model.parameters()])
    moved = (before - target).abs() > 1e-6
    measured = float(((after - target)[moved] / (before - target)[moved]).median())
    separate = ppo.acting_model is ppo.ema.model and ppo.acting_model is not ppo.model
    return [
        Row(
            "EMA rollout agent (ema = d ema + (1 - d) weights)",
            f"acts with the EMA, d = {decay:g}",
            f"{'acts with the EMA' if separate else 'acts with the model'}, d = {measured:.4g}",
            separate and abs(measured - decay) < 1e-3,
        )
    ]


def check_precision(o: Objects) -> list[Row]:
    precision, model = o.cfg.precision, o.model
    if o.first_minibatch is None:
        return []
    with torch.no_grad(), o.ppo.accel.autocast():  # the context the update's loss runs in
        _, _, out = evaluate_minibatch(model, o.first_minibatch)  # the critic head's output
    dtypes = sorted({_dtype(p.dtype) for p in model.parameters()})
    want = "bfloat16" if precision == "bf16" else "float32"
    return [
        Row(
            f"precision ({precision})",
            f"update computes in {want}, weights float32",
            f"update computes in {_dtype(out.dtype)}, weights {', '.join(dtypes)}",
            _dtype(out.dtype) == want and dtypes == ["float32"],
        )
    ]


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


CHECKS: list[Callable[[Objects], list[Row]]] = [
    check_optimizer,
    check_init,
    check_action_std,
    check_normalizer,
    check_minibatches,
    check_advantages,
    check_grad_clip,
    check_value_clip,
    check_truncation,
    check_schedule,
    check_kl_stop,
    check_ema,
    check_precision,
]


def format_table(rows: list[Row]) -> str:
    """detail | expected | found | ok, as aligned text."""
    header = Row("detail", "expected", "found", True)
    cells = [(r.detail, r.expected, r.found, "ok" if r.ok else "FAIL") for r in rows]
    head = (header.detail, header.expected, header.found, "ok")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(4)]
    lines = ["  ".join(text.ljust(w) for text, w in zip(head, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(text.ljust(w) for text, w in zip(c, widths)).rstrip() for c in cells]
    return "\n".join(lines)


def verify(cfg: TrainConfig, device: str | torch.device = "cpu") -> list[Row]:
    """Build the objects of `cfg` and check them."""
    objects = build(cfg, device)
    try:
        return check(objects)
    finally:
        objects.env.close()
