"""Settings trees: every setting of a script, with its default, type and comment (as pycls's config).

A script's tree is a dict ``KEY -> Key`` declared under ``config/``. :func:`resolve` builds the
settings of a run in one pass, later sources winning:

    the tree's defaults -> a profile (a dataset config file, or a paper's per-dataset values)
                        -> a settings file (``--config-file FILE.yaml``: ``KEY: value`` lines)
                        -> the script's own flags (the seeds' flags and the common ones)
                        -> ``--set KEY=VALUE``

Every value, from any source, is checked against its key's type and choices; ``--epochs N``
scales the keys declared as epoch counts of the schedule (``per_epochs``) unless they were set
explicitly; a tree's ``check`` validates the keys together; the result is a frozen
:class:`Settings`. Bad input raises :class:`~utils.core.errors.UserError` (one line, exit 2).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from utils.core.errors import UserError

SCRIPT_EPOCHS = "<epochs>"  # Key.per_epochs of a strategy's key: the epochs key of whichever script has it
TYPES = ("int", "float", "bool", "str", "list[int]", "list[float]", "list[str]")
TRUE, FALSE = ("true", "yes", "y", "1", "t"), ("false", "no", "n", "0", "f")


@dataclass(frozen=True)
class Key:
    """One setting. ``type`` is inferred from ``default`` when not given (one of TYPES);
    ``choices`` are matched case-insensitively and stored as spelled here (a dict maps aliases to
    names); ``flags`` are the command-line options that set it; ``switch`` makes its flags take no
    value (store True); ``optional`` admits None; ``resumable`` keys may change on --resume;
    ``per_epochs`` names the key of the epochs this one counts in (scaled with --epochs);
    ``minimum``/``maximum`` bound numbers (and every element of a list) inclusively, ``above``/
    ``below`` strictly; a float must be finite."""

    default: Any
    help: str
    type: str | None = None
    choices: tuple | Mapping | None = None
    flags: tuple = ()
    switch: bool = False
    optional: bool = False
    resumable: bool = False
    per_epochs: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    nargs: str | None = None

    def __post_init__(self):
        if self.type is None:
            object.__setattr__(self, "type", infer_type(self.default))
        if self.type not in TYPES:
            raise ValueError(f"unknown setting type {self.type!r}")
        if self.default is None:
            object.__setattr__(self, "optional", True)

    # ------------------------------------------------------------------ values
    def names(self) -> dict:
        """Lower-case spelling -> canonical choice."""
        if isinstance(self.choices, Mapping):
            return {str(k).lower(): v for k, v in self.choices.items()}
        return {str(c).lower(): c for c in self.choices or ()}

    def expects(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(dict.fromkeys(str(v) for v in self.names().values()))
        else:
            text = {"int": "an integer", "float": "a number", "bool": "True or False", "str": "a string",
                    "list[int]": "a list of integers, e.g. [1,2] or 1,2",
                    "list[float]": "a list of numbers, e.g. [0.5,0.5] or 0.5,0.5",
                    "list[str]": "a list of names, e.g. a,b"}[self.type]
        return text + self.bounds() + (" or None" if self.optional else "")

    def bounds(self) -> str:
        """The allowed range as text: '' (any), ' >= 1', ' in (0, 1]', ..."""
        low = (f"[{_number(self.minimum)}" if self.minimum is not None else
               f"({_number(self.above)}" if self.above is not None else None)
        high = (f"{_number(self.maximum)}]" if self.maximum is not None else
                f"{_number(self.below)})" if self.below is not None else None)
        if low and high:
            return f" in {low}, {high}"
        if low:
            return f" {'>=' if low[0] == '[' else '>'} {low[1:]}"
        if high:
            return f" {'<=' if high[-1] == ']' else '<'} {high[:-1]}"
        return ""

    def parse(self, text: Any) -> Any:
        """A command-line value (a string, or a list of strings for ``nargs``) as this key's type.
        Raises ValueError."""
        if isinstance(text, list):
            if not self.type.startswith("list"):
                raise ValueError("one value expected")
            return self.validate([self._parse_one(t, self.type[5:-1]) for t in text])
        text = str(text).strip()
        if self.optional and text.lower() in ("none", "null", ""):
            return None
        if self.type.startswith("list"):
            inner = self.type[5:-1]
            body = text[1:-1] if text.startswith(("[", "(")) and text.endswith(("]", ")")) else text
            items = [t.strip().strip("'\"") for t in body.split(",") if t.strip()]
            return self.validate([self._parse_one(t, inner) for t in items])
        return self.validate(self._parse_one(text, self.type))

    def _parse_one(self, text: str, kind: str) -> Any:
        if kind == "int":
            value = ast.literal_eval(text) if text.lstrip("+-").isdigit() else None
            if not isinstance(value, int):
                raise ValueError
            return value
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in TRUE:
                return True
            if text.lower() in FALSE:
                return False
            raise ValueError
        return text

    def validate(self, value: Any) -> Any:
        """``value`` (from Python: a default, a config file, a profile) checked and normalised
        (ints accepted as floats, tuples as lists, choices to their canonical spelling).
        Raises ValueError."""
        if value is None:
            if not self.optional:
                raise ValueError
            return None
        if self.type.startswith("list"):
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [self._check_scalar(v, self.type[5:-1]) for v in value]
        return self._check_scalar(value, self.type)

    def _check_scalar(self, value: Any, kind: str) -> Any:
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError
            value = float(value)
            if not math.isfinite(value):
                raise ValueError
        elif not isinstance(value, str):
            raise ValueError
        if self.choices:
            names = self.names()
            if str(value).lower() not in names:
                raise ValueError
            value = names[str(value).lower()]
        if kind in ("int", "float") and not self.in_range(value):
            raise ValueError
        return value

    def in_range(self, value: float) -> bool:
        return not ((self.minimum is not None and value < self.minimum) or
                    (self.maximum is not None and value > self.maximum) or
                    (self.above is not None and value <= self.above) or
                    (self.below is not None and value >= self.below))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def infer_type(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    if isinstance(default, (list, tuple)) and default:
        return f"list[{infer_type(default[0])}]"
    raise ValueError(f"cannot infer a setting type from {default!r}; pass type=")


class Settings(Mapping):
    """The resolved settings of ``script``, read-only: ``cfg.EPOCH`` or ``cfg["EPOCH"]``.
    ``sources[KEY]`` says where each value came from; ``scaled`` lists the keys --epochs scaled;
    ``strategy_key`` names the key of the run's query strategy (None: the script has none);
    ``reproducing`` the keys a settings file must hold to give these settings again (see to_yaml)."""

    def __init__(self, script: str, values: dict, tree: Mapping[str, Key], sources: dict, scaled: dict,
                 strategy_key: str | None = None, reproducing: tuple = ()):
        object.__setattr__(self, "script", script)
        object.__setattr__(self, "strategy_key", strategy_key)
        object.__setattr__(self, "reproducing", tuple(reproducing))
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "tree", tree)
        object.__setattr__(self, "sources", dict(sources))
        object.__setattr__(self, "scaled", dict(scaled))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting {name}") from None

    def __setattr__(self, name, value):
        raise AttributeError("settings are frozen; change them with --set KEY=VALUE")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict:
        return dict(self._values)

    def identity(self) -> dict:
        """The settings a resumed run must share with the saved one (all but the resumable keys)."""
        return {k: v for k, v in self._values.items() if not self.tree[k].resumable}

    def notes(self) -> list[str]:
        """One line per scaled key, for the log."""
        return [f"--epochs {info['epochs']}: {key} {info['from']} -> {info['to']} (scaled from {info['key']} "
                f"{info['base']}; --set {key}=... to choose)" for key, info in self.scaled.items()]

    def to_yaml(self, header: str) -> str:
        """The settings as a settings file (``--config-file``) that gives them again: the keys in
        ``reproducing`` (those a file, a flag or --set gave, those --epochs scaled, the dataset and the
        strategy) as ``KEY: value`` lines; every other key, left to its default or the profile that the
        dataset picks, as a comment. ``header`` opens it as a comment."""
        import yaml

        def line(key: str) -> str:
            text = yaml.safe_dump(self._values[key], default_flow_style=True, width=10**6)
            return f"{key}: {text.removesuffix(chr(10) + '...' + chr(10)).strip()}"

        lines = [f"# {text}" for text in header.splitlines()]
        lines += [line(key) for key in self.tree if key in self.reproducing]
        others = [key for key in self.tree if key not in self.reproducing]
        if others:
            lines.append("# the other settings, as the defaults and the dataset's profile give them:")
            lines += [f"# {line(key)}  ({self.sources[key]})" for key in others]
        return "\n".join(lines) + "\n"

    def listing(self, title: str) -> str:
        """Every key with its resolved value, where the value came from, its comment and flags."""
        width = max(len(k) for k in self._values)
        values = {k: _show(v) for k, v in self._values.items()}
        value_width = min(24, max(len(v) for v in values.values()))
        lines = [f"{title}: {len(self._values)} settings (change with --set KEY=VALUE)"]
        for key, key_def in self.tree.items():
            flags = f" [{', '.join(key_def.flags)}]" if key_def.flags else ""
            source = self.sources[key]
            origin = "" if source == "default" else f" ({source})"
            lines.append(f"{key:<{width}} = {values[key]:<{value_width}}  # {key_def.help}{flags}{origin}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


@dataclass
class Tree:
    """A script's settings: its keys, an optional ``profile(values) -> {KEY: value, ...}`` applied
    after the defaults (``values``: the settings resolved without it, e.g. to read DATASET), an
    optional ``check(settings)`` raising UserError on keys that do not fit together, the key
    that ``--epochs`` sets (``epochs_key``) and the key naming the run's query strategy
    (``strategy_key``; config.json records it, so readers of results need no table of scripts)."""

    script: str
    keys: dict
    profile: Callable[[dict], tuple[str, Mapping]] | None = None
    check: Callable[[Settings], None] | None = None
    epochs_key: str | None = None
    strategy_key: str | None = None
    others: dict = field(default_factory=dict)  # KEY -> the script it belongs to, for error messages
    # the query strategies' own settings: KEY -> the strategies declaring it, and
    # used_strategies(values) -> the registry names of the run's strategies (None: any of them, e.g. a sweep of all)
    owners: dict = field(default_factory=dict)
    used_strategies: Callable[[Mapping], Iterable[str] | None] | None = None

    def flag_keys(self) -> dict:
        """flag -> KEY."""
        return {flag.split("|")[0]: key for key, k in self.keys.items() for flag in k.flags}


def parse_assignments(pairs: Iterable[str]) -> list[tuple[str, str]]:
    """``["START=100", "lr=0.1"]`` -> ``[("START", "100"), ("LR", "0.1")]`` (keys upper-cased)."""
    parsed = []
    for pair in pairs:
        key, sep, text = str(pair).partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        parsed.append((key.strip().upper(), text))
    return parsed


def _unknown_key(tree: Tree, key: str) -> str:
    """Why ``key`` is no setting of ``tree`` (naming the script it belongs to)."""
    owner = tree.others.get(key)
    where = f"{key} is a setting of {owner}, not of {tree.script}" if owner else f"{tree.script} has no setting {key}"
    return f"{where}; settings: {', '.join(tree.keys)} (see --list-settings)"


def resolve(tree: Tree, flags: Mapping[str, Any], assignments: Iterable[str], file: Mapping[str, Any] | None = None,
            file_name: str = "") -> Settings:
    """The settings of a run: ``flags`` maps each command-line flag that was given (e.g.
    ``"--n_epoch"``) to its raw value; ``assignments`` are the ``--set KEY=VALUE`` strings; ``file``
    the ``KEY: value`` pairs of the settings file ``file_name`` (read_settings_file), which the flags
    and --set override."""
    keys = tree.keys
    pending = {}  # KEY -> (source, raw value, parse from text?)
    flag_keys = tree.flag_keys()
    for flag, raw in flags.items():
        key = flag_keys[flag]
        if key in pending:
            raise UserError(f"{pending[key][0]} and {flag} both set {key}; give one of them")
        pending[key] = (flag, raw)
    for key, text in parse_assignments(assignments):
        if key not in keys:
            raise UserError(f"--set {key}: {_unknown_key(tree, key)}")
        if key in pending:
            raise UserError(f"{pending[key][0]} and --set {key} both set {key}; give one of them")
        pending[key] = (f"--set {key}=", text)
    for key, value in (file or {}).items():
        if key not in keys:
            raise UserError(f"{file_name}: {_unknown_key(tree, key)}")
        if key not in pending:
            pending[key] = (f"{file_name}: {key}=", value)

    explicit = {}
    for key, (source, raw) in pending.items():
        try:
            from_file = source.startswith(f"{file_name}: ") and not isinstance(raw, str)
            explicit[key] = keys[key].validate(raw) if from_file else keys[key].parse(raw)
        except (ValueError, SyntaxError):
            shown = " ".join(raw) if isinstance(raw, list) and not from_file else raw
            given = f"{source}{shown}" if source.endswith("=") else f"{source} {shown}"
            raise UserError(f"{given}: {key} expects {keys[key].expects()}") from None

    values = {k: keys[k].default for k in keys}
    sources = dict.fromkeys(keys, "default")
    if tree.profile is not None:
        name, profile = tree.profile({**values, **explicit})
        for key, value in profile.items():
            if key not in keys:
                continue  # a value of a sibling script (e.g. TOD's WEIGHT in main_LL4AL.py)
            try:
                values[key] = keys[key].validate(value)
            except ValueError:
                raise UserError(f"{name}: {key} = {value!r}, but {key} expects {keys[key].expects()}") from None
            sources[key] = name

    scaled = {}
    epochs_flag = "--epochs"
    if tree.epochs_key and pending.get(tree.epochs_key, ("",))[0] == epochs_flag:
        base, epochs = values[tree.epochs_key], explicit[tree.epochs_key]
        for key, key_def in keys.items():
            if key_def.per_epochs == tree.epochs_key and key not in explicit and values[key] is not None \
                    and epochs != base:
                before = values[key]
                values[key] = scale(before, epochs / base)
                sources[key] = f"scaled by --epochs {epochs}"
                scaled[key] = {"from": before, "to": values[key], "key": tree.epochs_key, "base": base,
                               "epochs": epochs}
    for key, value in explicit.items():
        values[key] = value
        source = pending[key][0]
        sources[key] = file_name if file_name and source == f"{file_name}: {key}=" else source.rstrip("=")
    settings = Settings(tree.script, values, keys, sources, scaled, tree.strategy_key)
    _refuse_unused_strategy_keys(tree, settings, {k: pending[k][0] for k in explicit})
    settings = Settings(tree.script, values, keys, sources, scaled, tree.strategy_key,
                        _reproducing(tree, settings, {*explicit, *scaled}))
    if tree.check is not None:
        tree.check(settings)
    return settings


def _refuse_unused_strategy_keys(tree: Tree, settings: Settings, given: Mapping[str, str]) -> None:
    """A strategy's setting given (``given``: KEY -> the flag or ``--set KEY=`` that set it) for a run
    that does not use the strategy stops with one line, as a key of another script does."""
    if not tree.owners or tree.used_strategies is None:
        return
    used = tree.used_strategies(settings)
    if used is None:
        return
    used = set(used)
    for key, source in given.items():
        owners = tree.owners.get(key)
        if owners and not used & set(owners):
            value = settings[tree.strategy_key] if tree.strategy_key else None
            names = "" if [str(value)] == sorted(used) else f": {', '.join(sorted(used))}"
            run = f" ({tree.strategy_key} {value}{names})" if value else ""
            raise UserError(f"{source.rstrip('=')}: {key} is a setting of {' and '.join(owners)}, which this run "
                            f"does not use{run}; drop it")


def _reproducing(tree: Tree, settings: Settings, given: set) -> set:
    """The keys a settings file needs to give ``settings`` again: those given or scaled (less the
    settings of strategies the run does not use, which it would refuse), the protocol, the dataset and the
    strategy."""
    used = tree.used_strategies(settings) if tree.owners and tree.used_strategies is not None else None
    unused = {key for key, owners in tree.owners.items() if used is not None and not set(used) & set(owners)}
    named = {key for key in ("PROTOCOL", "DATASET", tree.strategy_key)
             if key in tree.keys and settings[key] is not None}
    return (given - unused) | named


def read_settings_file(path: str) -> dict:
    """The ``KEY: value`` pairs of the YAML settings file ``path`` (keys upper-cased, as --set's); a
    file that cannot be read, is no YAML mapping, or gives a key twice stops with one line."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        pairs = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            value = loader.construct_object(value_node, deep=True)
            if not isinstance(key, str) or not key.strip():
                raise UserError(f"{path}: line {key_node.start_mark.line + 1}: expected a setting's name, got {key!r}")
            name = key.strip().upper()
            if name in pairs:
                raise UserError(f"{path}: {name} is given twice (line {key_node.start_mark.line + 1}); give it once")
            pairs[name] = value
        return pairs

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as exc:
        raise UserError(f"--config-file {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"--config-file {path}: not YAML{where} ({getattr(exc, 'problem', None) or exc}); "
                        "expected KEY: value lines") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config-file {path}: expected KEY: value lines (settings), got a {type(data).__name__}")
    for key, value in data.items():
        if isinstance(value, dict):
            raise UserError(f"{path}: {key}: expected a value, got a mapping (settings are KEY: value lines)")
    return data


def scale(value: Any, factor: float) -> Any:
    """An epoch count (or a list of them) times ``factor``, rounded; a positive count stays >= 1."""
    if isinstance(value, list):
        return [scale(v, factor) for v in value]
    scaled = round(value * factor)
    return max(1, scaled) if value > 0 else scaled
