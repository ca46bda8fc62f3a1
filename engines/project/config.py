"""A DeepLabCut project's config.yaml: reading and checking it into a :class:`Project`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date as _date
from pathlib import Path
from typing import Any

import yaml

from posed.errors import ConfigError

_DEFAULT_PCUTOFF = 0.6
_DEFAULT_BATCH_SIZE = 8
_DEFAULT_TRAINING_FRACTION = (0.95,)
SINGLE = "single"
"""The pseudo-individual DeepLabCut files the unique body parts of a multi-animal project under."""
# DeepLabCut's own key for label tables; other keys are accepted only when there is one.


# --------------------------------------------------------------------------------------------
# Project config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """A DeepLabCut project, as described by its ``config.yaml``.

    Attributes:
        root: Absolute project folder (the folder holding ``config.yaml``; the ``project_path``
            key inside the file is ignored because projects are often moved).
        config_path: Absolute path of ``config.yaml``.
        task: Config ``Task``.
        scorer: Config ``scorer``; label files are ``CollectedData_<scorer>.h5``.
        date: Config ``date`` (e.g. ``'Oct30'``).
        bodyparts: Config ``bodyparts``, in order. For a multi-animal project (whose config
            says ``bodyparts: MULTI!``) ``multianimalbodyparts + uniquebodyparts``, the order
            DeepLabCut stacks them in.
        training_fraction: Config ``TrainingFraction``.
        iteration: Config ``iteration`` (0 when absent).
        pcutoff: Config ``pcutoff`` (0.6 when absent).
        engine: Config ``engine`` (e.g. ``'pytorch'``) or None when absent.
        default_net_type: Config ``default_net_type`` or None when absent.
        skeleton: Config ``skeleton`` as pairs of body part names.
        batch_size: Config ``batch_size`` (8 when absent).
        raw: The whole parsed config.
        multianimal: Config ``multianimalproject`` (False when absent).
        individuals: Config ``individuals`` (multi-animal projects; empty otherwise).
        multianimalbodyparts: Config ``multianimalbodyparts`` (multi-animal projects).
        uniquebodyparts: Config ``uniquebodyparts`` (multi-animal projects; may be empty).
        flip_pairs: Config ``flip_pairs``: the [left, right] body parts a horizontal flip
            swaps; None when absent (training then infers them from the names).
    """

    root: Path
    config_path: Path
    task: str
    scorer: str
    date: str
    bodyparts: tuple[str, ...]
    training_fraction: tuple[float, ...]
    iteration: int
    pcutoff: float
    engine: str | None
    default_net_type: str | None
    skeleton: tuple[tuple[str, str], ...]
    batch_size: int
    raw: dict
    multianimal: bool = False
    individuals: tuple[str, ...] = ()
    multianimalbodyparts: tuple[str, ...] = ()
    uniquebodyparts: tuple[str, ...] = ()
    flip_pairs: tuple[tuple[str, str], ...] | None = None

    @property
    def name(self) -> str:
        """DeepLabCut's short project name, ``f"{task}{date}"`` (e.g. ``'openfieldOct30'``)."""
        return f"{self.task}{self.date}"

    @property
    def label_individuals(self) -> tuple[str, ...]:
        """The individuals of the label files: ``individuals`` plus ``single`` when there are
        unique body parts (empty for single-animal projects)."""
        if not self.multianimal:
            return ()
        return self.individuals + ((SINGLE,) if self.uniquebodyparts else ())


def is_int(value: Any) -> bool:
    """Whether a config value is an integer (``True``/``False`` are not)."""
    # bool is an int subclass, but `batch_size: true` is a user mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether a config value is a finite int or float (not a bool)."""
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def type_name(value: Any) -> str:
    """How errors name a config value's type (YAML's ``null`` for None)."""
    return "null" if value is None else type(value).__name__


def _require_str(cfg: dict, key: str, path: Path) -> str:
    if key not in cfg:
        raise ConfigError(f"{path}: missing key '{key}'")
    value = cfg[key]
    if key == "date" and isinstance(value, _date):
        # YAML turns an unquoted 2024-01-31 into a date; DeepLabCut only uses it as text.
        return value.isoformat()
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{path}: '{key}' must be a non-empty string, got {type_name(value)} {value!r}"
        )
    return value


def _optional_str(cfg: dict, key: str, path: Path) -> str | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}: '{key}' must be a string, got {type_name(value)} {value!r}")
    return value


def _name_list(value: Any, key: str, path: Path, allow_empty: bool = False) -> tuple[str, ...]:
    """Checks a config list of distinct, non-empty names (``bodyparts`` and friends)."""
    if value is None and allow_empty:
        return ()
    if not isinstance(value, list) or (not value and not allow_empty):
        what = "a list of names" if allow_empty else "a non-empty list of names"
        raise ConfigError(f"{path}: '{key}' must be {what}, got {type_name(value)} {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(
                f"{path}: '{key}' entries must be non-empty strings, got {type_name(item)} "
                f"{item!r}"
            )
    seen: set[str] = set()
    dupes = [name for name in value if name in seen or seen.add(name)]
    if dupes:
        raise ConfigError(f"{path}: '{key}' lists {', '.join(sorted(set(dupes)))} twice")
    return tuple(value)


def _parse_bodyparts(cfg: dict, path: Path) -> tuple[str, ...]:
    if "bodyparts" not in cfg:
        raise ConfigError(f"{path}: missing key 'bodyparts'")
    value = cfg["bodyparts"]
    if value == "MULTI!":
        raise ConfigError(
            f"{path}: 'bodyparts: MULTI!' marks a multi-animal project, but "
            "'multianimalproject' is not true"
        )
    return _name_list(value, "bodyparts", path)


def _optional(cfg: dict, key: str, kind: type, want: str, path: Path) -> Any:
    """``cfg[key]`` when present (None otherwise), refused in one line unless a ``kind``."""
    value = cfg.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"{path}: '{key}' must be {want}, got {type_name(value)} {value!r}")
    return value


def _parse_multianimal_flag(cfg: dict, path: Path) -> bool:
    return bool(_optional(cfg, "multianimalproject", bool, "true or false", path))


def _parse_multianimal(
    cfg: dict, path: Path
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The individuals, multi-animal and unique body parts of a multi-animal config."""
    for key in ("individuals", "multianimalbodyparts"):
        if key not in cfg:
            raise ConfigError(
                f"{path}: multi-animal project (multianimalproject: true) lacks key '{key}'"
            )
    individuals = _name_list(cfg["individuals"], "individuals", path)
    if SINGLE in individuals:
        raise ConfigError(
            f"{path}: 'individuals' must not list '{SINGLE}' (DeepLabCut reserves it for the "
            "unique body parts)"
        )
    multi = _name_list(cfg["multianimalbodyparts"], "multianimalbodyparts", path)
    unique = _name_list(cfg.get("uniquebodyparts"), "uniquebodyparts", path, allow_empty=True)
    both = [name for name in unique if name in multi]
    if both:
        raise ConfigError(
            f"{path}: 'uniquebodyparts' and 'multianimalbodyparts' both list "
            f"{', '.join(repr(name) for name in both)}"
        )
    return individuals, multi, unique


def _parse_training_fraction(cfg: dict, path: Path) -> tuple[float, ...]:
    value = cfg.get("TrainingFraction")
    if value is None:
        return _DEFAULT_TRAINING_FRACTION
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{path}: 'TrainingFraction' is an empty list")
    out = []
    for item in items:
        if not is_number(item) or not 0.0 < float(item) < 1.0:
            raise ConfigError(
                f"{path}: 'TrainingFraction' entries must be numbers between 0 and 1 "
                f"(exclusive), got {item!r}"
            )
        out.append(float(item))
    return tuple(out)


def _parse_int(cfg: dict, key: str, default: int, minimum: int, path: Path) -> int:
    value = cfg.get(key)
    if value is None:
        return default
    if not is_int(value) or value < minimum:
        raise ConfigError(
            f"{path}: '{key}' must be an integer >= {minimum}, got {type_name(value)} {value!r}"
        )
    return value


def _parse_pcutoff(cfg: dict, path: Path) -> float:
    value = cfg.get("pcutoff")
    if value is None:
        return _DEFAULT_PCUTOFF
    if not is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{path}: 'pcutoff' must be a number between 0 and 1, got {value!r}")
    return float(value)


def _parse_skeleton(
    cfg: dict, bodyparts: tuple[str, ...], path: Path, listed_in: str = "bodyparts"
) -> tuple[tuple[str, str], ...]:
    value = cfg.get("skeleton")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            f"{path}: 'skeleton' must be a list of [bodypart, bodypart] pairs, got "
            f"{type_name(value)} {value!r}"
        )
    pairs = []
    for item in value:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(name, str) for name in item)
        ):
            raise ConfigError(
                f"{path}: 'skeleton' entries must be [bodypart, bodypart] pairs, got {item!r}"
            )
        unknown = [name for name in item if name not in bodyparts]
        if unknown:
            raise ConfigError(
                f"{path}: 'skeleton' names unknown body part '{unknown[0]}' "
                f"({listed_in}: {', '.join(bodyparts)})"
            )
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def _parse_flip_pairs(
    cfg: dict, groups: tuple[tuple[str, ...], ...], path: Path
) -> tuple[tuple[str, str], ...] | None:
    """``flip_pairs``: distinct [left, right] parts, each in one pair, both in one group (a
    multi-animal part cannot swap with a unique one: they are labelled on different rows)."""
    value = _optional(cfg, "flip_pairs", list, "a list of [left, right] body part pairs", path)
    if value is None:
        return None
    known = [name for group in groups for name in group]
    seen: set[str] = set()
    pairs = []
    for item in value:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(name, str) for name in item)
            or item[0] == item[1]
        ):
            raise ConfigError(
                f"{path}: 'flip_pairs' entries must be [left, right] pairs of two body parts, "
                f"got {item!r}"
            )
        for name in item:
            if name not in known:
                raise ConfigError(
                    f"{path}: 'flip_pairs' names unknown body part '{name}' "
                    f"(body parts: {', '.join(known)})"
                )
            if name in seen:
                raise ConfigError(f"{path}: 'flip_pairs' lists '{name}' in two pairs")
            seen.add(name)
        if not any(item[0] in group and item[1] in group for group in groups):
            raise ConfigError(
                f"{path}: 'flip_pairs' pairs multi-animal and unique body parts {item!r}"
            )
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def load_project(path: str | Path) -> Project:
    """Reads and checks a DeepLabCut project config.

    Args:
        path: The project folder or its ``config.yaml``.

    Returns:
        The parsed project.

    Raises:
        ConfigError: The config is missing, is not valid YAML, lacks a required key
            (``Task``, ``scorer``, ``date``, ``bodyparts``; for multi-animal projects
            ``individuals`` and ``multianimalbodyparts`` instead of ``bodyparts``), has a
            value of the wrong type, lists a body part both as multi-animal and unique, or
            has a ``flip_pairs`` entry that is not a pair of its body parts.
    """
    path = Path(path).expanduser()
    config_path = path / "config.yaml" if path.is_dir() else path
    config_path = config_path.resolve()
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: project config not found")
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: cannot read config ({exc})") from exc
    try:
        cfg = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{config_path}: YAML error at {where}: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: YAML error: {exc}".replace("\n", " ")) from exc
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{config_path}: expected a mapping of config keys, got {type_name(cfg)}"
        )

    task = _require_str(cfg, "Task", config_path)
    scorer = _require_str(cfg, "scorer", config_path)
    date = _require_str(cfg, "date", config_path)
    multianimal = _parse_multianimal_flag(cfg, config_path)
    individuals: tuple[str, ...] = ()
    multi: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    if multianimal:
        # DeepLabCut ignores 'bodyparts' (normally "MULTI!") in multi-animal projects.
        individuals, multi, unique = _parse_multianimal(cfg, config_path)
        bodyparts = multi + unique
        listed_in = "multianimalbodyparts + uniquebodyparts"
        groups = (multi, unique)
    else:
        bodyparts = _parse_bodyparts(cfg, config_path)
        listed_in = "bodyparts"
        groups = (bodyparts,)
    return Project(
        root=config_path.parent,
        config_path=config_path,
        task=task,
        scorer=scorer,
        date=date,
        bodyparts=bodyparts,
        training_fraction=_parse_training_fraction(cfg, config_path),
        iteration=_parse_int(cfg, "iteration", 0, 0, config_path),
        pcutoff=_parse_pcutoff(cfg, config_path),
        engine=_optional_str(cfg, "engine", config_path),
        default_net_type=_optional_str(cfg, "default_net_type", config_path),
        skeleton=_parse_skeleton(cfg, bodyparts, config_path, listed_in),
        batch_size=_parse_int(cfg, "batch_size", _DEFAULT_BATCH_SIZE, 1, config_path),
        raw=cfg,
        multianimal=multianimal,
        individuals=individuals,
        multianimalbodyparts=multi,
        uniquebodyparts=unique,
        flip_pairs=_parse_flip_pairs(cfg, groups, config_path),
    )
