"""A recipe: how one registry job prunes a model (api.prune's options, calibration data and a gate policy).

The command line and a hook config fill the same dataclass, by the prune options' names (`round-to`,
`heads-ratio`, ...). `sha256()` names the recipe: it covers every option and the contents of the calibration and
policy files, so the registry can tell whether a version was already pruned this way (see mlflow_registry.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from ..calib import CALIB_SAMPLES
from ..errors import OptionError
from ..importance import DEFAULT_CRITERION
from ..plan import PlanOptions

# recipe field -> the option that sets it (the same names as `onnxprune prune`)
OPTIONS = {
    "ratio": "ratio", "heads_ratio": "heads-ratio", "ffn_ratio": "ffn-ratio", "criterion": "criterion",
    "scope": "scope", "max_ratio": "max-ratio", "round_to": "round-to", "target": "target",
    "min_channels": "min-channels", "exclude": "exclude", "shapes": "shape", "calib": "calib",
    "calib_samples": "calib-samples", "recover": "recover", "policy": "policy",
}
PATHS = ("calib", "policy")


@dataclass(frozen=True)
class Recipe:
    ratio: float = PlanOptions.ratio
    heads_ratio: Optional[float] = None
    ffn_ratio: Optional[float] = None
    criterion: str = DEFAULT_CRITERION
    scope: str = PlanOptions.scope
    max_ratio: float = PlanOptions.max_ratio
    round_to: Optional[int] = None  # None: --target's block, else PlanOptions.round_to
    target: Optional[str] = None
    min_channels: int = PlanOptions.min_channels
    exclude: tuple = ()
    shapes: dict = field(default_factory=dict)  # pinned input dims, {name: [dims]}
    calib: Optional[str] = None  # calibration inputs (.npz)
    calib_samples: int = CALIB_SAMPLES
    recover: Optional[str] = None
    policy: Optional[str] = None  # a gate policy (TOML, see gate.py)

    @classmethod
    def from_options(cls, values: Mapping[str, object], label: str = "the command line",
                     base: Optional[Path] = None) -> "Recipe":
        """A recipe from option names (dashes or underscores; None values are skipped). Relative calib and policy
        paths are read from `base` (a config file's folder)."""
        by_option = {option: name for name, option in OPTIONS.items()}
        changes: dict = {}
        for key, value in values.items():
            if value is None:
                continue
            option = key.replace("_", "-")
            name = by_option.get(option)
            if name is None:
                raise OptionError(f"{label}: unknown setting {key!r}; known: {', '.join(sorted(by_option))}")
            if name == "shapes":
                from ..inputs import parse_shapes

                texts = [value] if isinstance(value, str) else value
                if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
                    raise OptionError(f"{label}: 'shape' takes NAME=AxBxC strings, got {value!r}")
                value = parse_shapes(texts)
            elif name == "exclude":
                value = (value,) if isinstance(value, str) else tuple(value)
            elif name in PATHS:
                if not isinstance(value, str):
                    raise OptionError(f"{label}: {option!r} must be a path, got {value!r}")
                value = str(base / value) if base is not None and not os.path.isabs(value) else value
            changes[name] = value
        recipe = cls(**changes)
        recipe.validate(label)
        return recipe

    def validate(self, label: str = "recipe") -> None:
        from ..importance import CRITERIA
        from ..plan import SCOPES
        from ..recovery import METHODS
        from ..target import CHOICES

        for name in ("ratio", "max_ratio", "heads_ratio", "ffn_ratio"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise OptionError(f"{label}: --{OPTIONS[name]} must be a number, got {value!r}")
        for name in ("round_to", "min_channels", "calib_samples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OptionError(f"{label}: --{OPTIONS[name]} must be a whole number >= 1, got {value!r}")
        for name, choices in (("criterion", CRITERIA), ("scope", SCOPES), ("recover", METHODS), ("target", CHOICES)):
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise OptionError(f"{label}: --{OPTIONS[name]} must be one of {', '.join(choices)}, got {value!r}")
        if self.round_to is not None and self.target is not None:
            raise OptionError(f"{label}: --round-to and --target both set the channel multiple: give one")
        if not all(isinstance(p, str) for p in self.exclude):
            raise OptionError(f"{label}: --exclude takes glob strings, got {list(self.exclude)!r}")
        for name in PATHS:
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise OptionError(f"{label}: --{name} {path}: no such file")
        if self.policy is not None:
            from ..gate import load_policy

            load_policy(self.policy)  # a malformed policy fails here, before any job starts
        PlanOptions(self.ratio, self.scope, self.max_ratio, self.resolved_round_to(), self.min_channels,
                    tuple(self.exclude), self.heads_ratio, self.ffn_ratio).validate()

    def resolved_round_to(self) -> int:
        if self.target is not None:
            from ..target import round_to_for

            return round_to_for(self.target)
        return PlanOptions.round_to if self.round_to is None else self.round_to

    def prune_kwargs(self) -> dict:
        """api.prune's keyword arguments (the model aside)."""
        return dict(ratio=self.ratio, scope=self.scope, criterion=self.criterion, max_ratio=self.max_ratio,
                    round_to=self.resolved_round_to(), min_channels=self.min_channels, exclude=tuple(self.exclude),
                    heads_ratio=self.heads_ratio, ffn_ratio=self.ffn_ratio, shapes=dict(self.shapes) or None,
                    calib=self.calib, calib_samples=self.calib_samples, recover=self.recover)

    def to_dict(self) -> dict:
        """By option name, the values given (paths as given)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "exclude":
                value = list(value)
            elif f.name == "shapes":
                value = [f"{k}={'x'.join(map(str, v))}" for k, v in sorted(value.items())]
            out[OPTIONS[f.name]] = value
        return out

    def sha256(self) -> str:
        """The recipe's name: every option, with the calibration and policy files by their contents."""
        from ..provenance import file_sha256

        data = self.to_dict()
        for name in PATHS:
            path = getattr(self, name)
            data[OPTIONS[name]] = None if path is None else file_sha256(path)
        data["round-to"] = self.resolved_round_to()
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
