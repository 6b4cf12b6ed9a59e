"""What every config key means, and the help and annotated config built from it.

The schema is `securediff/config.py`: a key's type is its dataclass annotation,
its default the dataclass default, and its allowed values the rule its section's
`validate` checks (`stated_rules`, which runs `validate` with a `_check`
that records instead of judging). Only the meaning is written here; a test keeps this table
and the dataclasses in step, so a new key without a meaning fails the suite.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

MEANING: dict[str, str] = {
    "run.name": "name of the run directory under run.out_dir",
    "run.out_dir": "where run directories are written",
    "run.device": "where tensors live: auto picks cuda when present",
    "run.insecure_seed": "TEST MODE: derive every random stream from this seed; the run is NOT PRIVATE",
    "run.workers": "clients trained at once, one thread each (0 = one per CPU core)",
    "data.dataset": "the images: built-ins or a local file format",
    "data.path": "local file or directory for the file-based datasets",
    "data.num_clients": "number of clients the data is split across",
    "data.partition": "how records are split across clients",
    "data.alpha": "Dirichlet concentration of the label skew (small = more skewed)",
    "data.shards_per_client": "label shards per client (partition shards)",
    "data.quantity_sigma": "log-normal spread of client sizes (partition quantity)",
    "data.partition_seed": "seed of the split (public: it only decides who holds what)",
    "data.holdout_fraction": "share of each client's records held out as the audits' non-members",
    "data.test_fraction": "share of the data kept as the evaluation test split",
    "diffusion.T": "diffusion steps",
    "diffusion.schedule": "noise schedule of the betas",
    "diffusion.beta_start": "first beta of the schedule",
    "diffusion.beta_end": "last beta of the schedule",
    "diffusion.sampler": "sampler used to draw samples",
    "diffusion.sample_steps": "sampler steps per sample",
    "diffusion.guidance": "classifier-free guidance weight (0 = none)",
    "diffusion.label_dropout": "label dropout while training, for classifier-free guidance",
    "model.base_channels": "UNet width of the first level",
    "model.channel_mults": "UNet width multiplier per level, comma-separated (e.g. 1,2)",
    "model.attention": "self-attention in the UNet's middle block",
    "model.groups": "GroupNorm groups",
    "privacy.target_epsilon": "forward-noise budget per record (replace-one); sets t0",
    "privacy.delta": "delta of every (epsilon, delta) claim",
    "privacy.clip_norm": "PFDM's C: images are clipped to this L2 norm before noising",
    "privacy.t0": "hand-off step; unset = the smallest that meets target_epsilon",
    "privacy.accounting": "forward-noise analysis: exact (Balle & Wang) or the paper's classic bound",
    "privacy.accountant": "accountant of DP-SGD events and the ledger's headline",
    "privacy.labels": "public labels, or labels released through randomized response",
    "privacy.label_epsilon": "epsilon of randomized response on the labels",
    "privacy.dpsgd_shared": "train the shared denoiser with DP-SGD",
    "privacy.dpsgd_personal": "train the personal denoiser with DP-SGD",
    "privacy.dpsgd_epsilon": "DP-SGD budget per artefact trained with it",
    "privacy.max_grad_norm": "DP-SGD per-sample gradient clipping norm",
    "privacy.noise_multiplicity": "noise/timestep draws per sample, averaged before clipping",
    "privacy.secure_noise": "DP-SGD noise as the halved sum of 4 draws (Opacus' secure mode)",
    "privacy.clipping": "fixed clip norms, or adaptive ones from private quantiles",
    "privacy.clip_quantile": "target quantile of adaptive clipping",
    "privacy.clip_lr": "step size of adaptive clipping's geometric update",
    "privacy.clip_quantile_epsilon": "budget of the private quantile (unset = the default share)",
    "privacy.ddp_min_survivors": "distributed DP noise floor: clients whose noise must survive (0 = 80%)",
    "privacy.client_level": "client-level DP: clip each client's whole shared update and noise the sum",
    "privacy.client_noise": "client-level noise: gaussian (added by the aggregator) or skellam (client shares, secagg)",
    "privacy.client_clip": "L2 clip of each client's shared update under client-level DP",
    "privacy.client_epsilon": "client-level budget over all rounds (add/remove of one client's update)",
    "privacy.client_noise_multiplier": "client-level noise std / client_clip; 0 = calibrate to client_epsilon",
    "federation.strategy": "what is trained together and what stays personal",
    "federation.protocol": "aggregation protocol (flag: --protocol)",
    "federation.dropout_rate": "simulated dropout fraction per round (flag: --dropout-rate)",
    "federation.dropout_stage": "protocol stage before which dropped clients vanish (empty = random)",
    "federation.rounds": "federated rounds",
    "federation.client_fraction": "fraction of clients selected per round",
    "federation.local_steps": "local steps on the shared model per round",
    "federation.update_clip": "L2 clip of each shared update (0 = off)",
    "federation.personal_t": "hand-off step of the hybrid strategy",
    "federation.hybrid_forward": "hybrid: train the shared model on forward-noised data",
    "training.batch_size": "batch size of every training step",
    "training.lr": "Adam learning rate",
    "training.personal_steps": "personal-model steps per round",
    "training.centralized_steps": "steps of the centralized baseline",
    "eval.samples_per_class": "samples drawn per class and client for evaluation",
    "eval.evaluator_epochs": "epochs of the (non-private, never shared) evaluator",
    "public.dataset": "public data that pretrains the models before any private step (empty = none)",
    "public.path": "local file or directory of a file-based public dataset",
    "public.per_class": "font-digits: images rendered per digit",
    "public.steps": "public pretraining steps of the shared model (no privacy cost)",
    "stats.release": "release DP per-class feature sums and second moment once, before the first round",
    "stats.feature_map": "what each record is mapped to before clipping (colour-normalised-grey drops a tint)",
    "stats.clip": "L2 clip norm of each record's features (0 = the public data's median feature norm)",
    "stats.moment_rank": "second moment of the top r public principal directions (0 = full)",
    "stats.epsilon": "the release's own epsilon at privacy.delta, under the run's neighbouring relation",
    "stats.handoff_t": "dpstats: the shared model (public, fine-tuned on release draws) denoises t above it",
    "stats.below_handoff": "dpstats: below handoff_t each client samples its personal denoiser or the public model",
    "stats.finetune_steps": "dpstats: steps fine-tuning the shared model on draws from the release",
}

# Keys whose command-line flag is a short option (one spelling per option): the
# config-key flag is refused and names this one.
SHORT_FLAGS = {"federation.protocol": "--protocol", "federation.dropout_rate": "--dropout-rate",
               "run.device": "--device", "run.insecure_seed": "--insecure-deterministic"}


@dataclasses.dataclass(frozen=True)
class KeyHelp:
    key: str
    type: str
    default: Any
    allowed: str
    meaning: str

    @property
    def flag(self) -> str:
        return SHORT_FLAGS.get(self.key, f"--{self.key}")


def _type_name(annotation: Any) -> str:
    hint = annotation if not isinstance(annotation, str) else eval(annotation, vars(typing))  # noqa: S307
    args = typing.get_args(hint)
    if type(None) in args:
        return _type_name(next(a for a in args if a is not type(None))) + " (optional)"
    if typing.get_origin(hint) is tuple:
        return "INT,INT,..."
    return {str: "TEXT", int: "INT", float: "NUMBER", bool: "true|false"}.get(hint, str(hint))


def key_help() -> list[KeyHelp]:
    from securediff.config import section_types, stated_rules

    rules = stated_rules()
    out = []
    for section, cls in section_types().items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            out.append(KeyHelp(key=key, type=_type_name(f.type), default=getattr(defaults, f.name),
                               allowed=rules.get(key, "any " + _type_name(f.type).lower()),
                               meaning=MEANING.get(key, "")))
    return out


def flag_value(value: Any) -> str:
    """A default as one would type it on the command line."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value) if value != "" else '""'


def flags_epilog() -> str:
    """`train --help`'s list of config flags: flag, type, meaning, allowed, default."""
    lines = []
    for h in key_help():
        lines.append(f"{h.flag} {h.type}: {h.meaning}. Allowed: {h.allowed}. "
                     f"Default: {flag_value(h.default)}.")
    return "\n\n".join(lines)


def annotated_toml() -> str:
    """A config.toml holding every key at its default, each with its meaning and
    what is allowed (an unset optional key is a comment: TOML has no null)."""
    import tomli_w

    lines = ["# securediff run config: every key at its default.",
             "# securediff train --config FILE; a flag --section.key VALUE overrides a key.", ""]
    section = None
    for h in key_help():
        name, key = h.key.split(".", 1)
        if name != section:
            lines += ([""] if section else []) + [f"[{name}]"]
            section = name
        lines.append(f"# {h.meaning} ({h.type}; allowed: {h.allowed})")
        if h.default is None:
            lines.append(f"# {key} =")
        else:
            value = list(h.default) if isinstance(h.default, tuple) else h.default
            lines.append(tomli_w.dumps({key: value}).strip())
    return "\n".join(lines) + "\n"
