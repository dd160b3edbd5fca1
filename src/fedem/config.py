"""Loading, overriding and validating the configuration (the one source of hyper-parameters)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from fedem.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
DEFAULT_CONFIG_PATH = Path("config/config.yaml")


class YamlLoader(yaml.SafeLoader):
    """yaml.safe_load, except that floats are read as YAML 1.2 (and people) write them: 1e-3, 1E-3,
    -2.5e+4, 5. and .5 are numbers (YAML 1.1, PyYAML's default, wants a dot and a signed exponent, and
    reads 1e-3 as a string). Integers stay integers and every other string stays a string."""


FLOAT_AS_TYPED = re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?=[eE]))(?:[eE][-+]?[0-9]+)?$")
# appended after PyYAML's resolvers, so it only sees what they left a string (ints are taken before it)
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_AS_TYPED, list("-+0123456789."))


def floats_as_typed(node: Any) -> Any:
    """A config another YAML reader loaded (Snakemake's, YAML 1.1) with `1e-3` and the like turned
    from strings into the floats their writer meant, as YamlLoader reads them."""
    if isinstance(node, dict):
        return {k: floats_as_typed(v) for k, v in node.items()}
    if isinstance(node, list):
        return [floats_as_typed(v) for v in node]
    if isinstance(node, str) and FLOAT_AS_TYPED.match(node):
        return float(node)
    return node


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


# keys of a method block that say what the method is and how it is shown, not how it trains: a run
# records the rest (fedem.config.run_config)
PRESENTATION_KEYS = ("role", "ablation_of", "probes", "label")


def _raise_first(errors, source: str, prefix: tuple = ()) -> None:
    # an invalid value inside an allOf also leaves its key "unevaluated": report the value, not that
    # (and of unevaluated keys, the innermost is the one to name)
    def rank(e):
        unevaluated = e.validator == "unevaluatedProperties"
        return unevaluated, -len(e.absolute_path) if unevaluated else 0, list(e.absolute_path)

    errors = sorted(errors, key=rank)
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in (*prefix, *err.absolute_path)) or "<top level>"
        hint = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
        extra = f" ({hint})" if hint else ""
        raise ConfigError(f"invalid config in {source} at '{where}': {err.message}{extra}")


def base_of(config: dict, method: str) -> str:
    """The implementation a method block configures: its `base`, or its own key."""
    return config["methods"][method].get("base", method)


def method_block(config: dict, key: str) -> dict:
    """The full block of method `key`. A variant (a block whose `base` is another method) holds only
    what differs: it inherits every hyper-parameter and `training` override of its base's own block
    (dicts merged key by key), never the base's presentation keys (role, label, ...)."""
    block = config["methods"][key]
    base = block.get("base", key)
    if base == key:
        return copy.deepcopy(block)
    if base == PLUGIN_BASE:  # the EM plug-in runs a host method: it inherits the host's block
        base = block.get("host", "")
        if base not in config["methods"]:
            raise ConfigError(
                f"invalid config at 'methods.{key}.host': the plug-in's host '{base}' has no block under 'methods'; "
                f"configured: {', '.join(sorted(config['methods']))}"
            )
    if base not in config["methods"]:
        raise ConfigError(
            f"invalid config at 'methods.{key}.base': the variant's base '{base}' has no block under 'methods' "
            f"(a variant inherits its base's block); configured: {', '.join(sorted(config['methods']))}"
        )
    inherited = {k: v for k, v in config["methods"][base].items() if k not in PRESENTATION_KEYS and k != "base"}
    return deep_merge(inherited, block)


PLUGIN_BASE = "em-plugin"  # FedEM's merging attached to another method (fedem.methods.emplugin)
PLUGIN_KEYS = ("host", "adapter_layers", "adapter_lr")


def _check_plugin(schema: dict, block: dict, source: str, key: str) -> None:
    own = {k: v for k, v in block.items() if k in PLUGIN_KEYS or k in PRESENTATION_KEYS or k == "base"}
    sub = {"$defs": schema["$defs"], "$ref": f"#/$defs/method/{PLUGIN_BASE}"}
    _raise_first(jsonschema.Draft202012Validator(sub).iter_errors(own), source, ("methods", key))
    host = {k: v for k, v in block.items() if k not in PLUGIN_KEYS} | {"base": block["host"]}
    sub = {"$defs": schema["$defs"], "$ref": f"#/$defs/method/{block['host']}"}
    _raise_first(jsonschema.Draft202012Validator(sub).iter_errors(host), source, ("methods", key))


def validate(config: dict, source: str = "config") -> dict:
    """Raise ConfigError naming the first offending key; return the config unchanged. Each method block
    (a variant with what it inherits) is checked against the schema of its base method (unknown
    hyper-parameters are rejected)."""
    schema = load_schema()
    _raise_first(jsonschema.Draft202012Validator(schema).iter_errors(config), source)
    bases = schema["$defs"]["method"]
    for key, own in config["methods"].items():
        base = base_of(config, key)
        if base not in bases:
            raise ConfigError(
                f"invalid config in {source} at 'methods.{key}': unknown method '{base}'"
                f"{' (its base)' if base != key else ''}; implemented: {', '.join(sorted(bases))}"
                f"{'' if 'base' in own else '; a variant names its implementation with base: <method>'}"
            )
        block = method_block(config, key)
        if base == PLUGIN_BASE:  # its own keys against the plug-in's schema, the rest against its host's
            _check_plugin(schema, block, source, key)
        else:
            sub = {"$defs": schema["$defs"], "$ref": f"#/$defs/method/{base}"}
            _raise_first(jsonschema.Draft202012Validator(sub).iter_errors(block), source, ("methods", key))
        if block.get("role") == "ablation" and block.get("ablation_of") not in config["methods"]:
            raise ConfigError(
                f"invalid config in {source} at 'methods.{key}.ablation_of': an ablation names the "
                f"method it ablates, one of {', '.join(sorted(config['methods']))}"
            )
    _check_selection_metric(config["training"], source)
    _check_experiments(config, source)
    _check_fewer_seeds(config, source)
    return config


def _check_fewer_seeds(config: dict, source: str) -> None:
    """Entries may name methods and datasets outside this grid (an overlay's smaller grid keeps the
    shipped entries), but not unknown ones."""
    from fedem.data.registry import DATASETS

    for method, by_dataset in (config["grid"].get("fewer_seeds") or {}).items():
        at = f"invalid config in {source} at 'grid.fewer_seeds.{method}"
        if method not in config["methods"]:
            raise ConfigError(f"{at}': method '{method}' has no block under 'methods'")
        for dataset in by_dataset:
            if dataset not in DATASETS:
                raise ConfigError(f"{at}.{dataset}': unknown dataset; known: {', '.join(sorted(DATASETS))}")


# what an experiment's noise scale is, per base method (Table 4)
NOISE_KEY = {"fedem": "upload_noise", "pfedrec": "upload_noise", "gpfedrec": "dp"}
# what a sensitivity sweep varies, read from a fedem run's hyper-parameters (Fig. 6)
SWEPT = {"adapter_depth": lambda hp: len(hp["adapter_layers"]) - 1, "alpha": lambda hp: hp["alpha"]}


def host_of(config: dict, plugged: str) -> str:
    """The method a plug-in variant (base: em-plugin) attaches FedEM's merging to."""
    return config["methods"][plugged]["host"]


def experiment_methods(config: dict) -> dict[str, list[str]]:
    """Each experiment's methods, in order (ablation: the ladder then the extra rows)."""
    exp = config["experiments"]
    return {
        "ablation": list(dict.fromkeys(exp["ablation"]["ladder"] + exp["ablation"]["extra"])),
        "plugin": list(
            dict.fromkeys(m for plugged in exp["plugin"]["methods"] for m in (host_of(config, plugged), plugged))
        ),
        "sensitivity": list(dict.fromkeys(m for ms in exp["sensitivity"]["sweeps"].values() for m in ms)),
        "ldp": list(dict.fromkeys(m for ms in exp["ldp"]["series"] for m in ms)),
    }


def grid_seeds(config: dict, method: str, dataset: str | None = None) -> list[int]:
    """The Table-1 seeds of a grid method on a dataset: `grid.seeds`, or those of them that
    `grid.fewer_seeds` keeps there."""
    fewer = (config["grid"].get("fewer_seeds") or {}).get(method, {})
    seeds = config["grid"]["seeds"]
    return [s for s in seeds if s in fewer[dataset]] if dataset in fewer else list(seeds)


def experiment_datasets(config: dict, name: str) -> list[str]:
    """The grid datasets experiment `name` runs on: its `datasets`, or every grid dataset."""
    return list(config["experiments"][name].get("datasets", config["grid"]["datasets"]))


def planned_seeds(config: dict, method: str, dataset: str | None = None) -> set[int]:
    """The seeds a method is run with (on `dataset`, where the grid has fewer seeds for it there): the
    grid's if it is a grid method, and each experiment's it is in (that runs on `dataset`)."""
    seeds = set(grid_seeds(config, method, dataset)) if method in config["grid"]["methods"] else set()
    for name, methods in experiment_methods(config).items():
        if method in methods and (dataset is None or dataset in experiment_datasets(config, name)):
            seeds |= set(config["experiments"][name]["seeds"])
    return seeds


def planned_methods(config: dict) -> list[str]:
    """Every method any table or figure asks for: the grid's, then the experiments' variants."""
    extra = [m for ms in experiment_methods(config).values() for m in ms]
    return list(dict.fromkeys(config["grid"]["methods"] + extra))


def _check_experiments(config: dict, source: str) -> None:
    exp = config["experiments"]
    for name, block in exp.items():
        outside = [d for d in block.get("datasets", []) if d not in config["grid"]["datasets"]]
        if outside:
            raise ConfigError(
                f"invalid config in {source} at 'experiments.{name}.datasets': {', '.join(outside)} not in "
                f"grid.datasets ({', '.join(config['grid']['datasets'])}); an experiment runs on grid datasets only"
            )
    lists = [("ablation.ladder", exp["ablation"]["ladder"]), ("ablation.extra", exp["ablation"]["extra"])]
    lists += [(f"sensitivity.sweeps.{k}", v) for k, v in exp["sensitivity"]["sweeps"].items()]
    lists += [(f"ldp.series.{i}", v) for i, v in enumerate(exp["ldp"]["series"])]
    lists += [("plugin.methods", exp["plugin"]["methods"])]
    for where, methods in lists:
        for m in methods:
            if m not in config["methods"]:
                raise ConfigError(
                    f"invalid config in {source} at 'experiments.{where}': method '{m}' has no block under "
                    f"'methods'; configured: {', '.join(sorted(config['methods']))}"
                )
    for where, methods in lists:
        if where.startswith("sensitivity") and any(base_of(config, m) != "fedem" for m in methods):
            raise ConfigError(f"invalid config in {source} at 'experiments.{where}': a sweep holds fedem variants only")
    for plugged in exp["plugin"]["methods"]:
        if config["methods"][plugged].get("base") != PLUGIN_BASE:
            raise ConfigError(
                f"invalid config in {source} at 'experiments.plugin.methods': '{plugged}' is not a plug-in variant "
                f"(a block with base: {PLUGIN_BASE} and its host)"
            )
    if exp["ldp"]["chosen_by"] not in config["grid"]["protocols"]:
        raise ConfigError(
            f"invalid config in {source} at 'experiments.ldp.chosen_by': '{exp['ldp']['chosen_by']}' is not a grid "
            f"protocol; valid: {', '.join(config['grid']['protocols'])}"
        )
    for series, methods in enumerate(exp["ldp"]["series"]):
        bases = {base_of(config, m) for m in methods}
        if len(bases) != 1 or not bases <= set(NOISE_KEY):
            raise ConfigError(
                f"invalid config in {source} at 'experiments.ldp.series.{series}': the variants of one method "
                f"with an upload-noise switch ({', '.join(f'{b}.{k}' for b, k in NOISE_KEY.items())}), got bases "
                f"{', '.join(sorted(bases))}"
            )


def _check_selection_metric(training: dict, source: str) -> None:
    """The best-validation round is picked by a metric the evaluation computes: hr/ndcg at an eval K."""
    computed = [f"{name}@{k}" for name in ("hr", "ndcg") for k in training["eval_ks"]]
    if training["selection_metric"] not in computed:
        raise ConfigError(
            f"invalid config in {source} at 'training.selection_metric': '{training['selection_metric']}' is not "
            f"computed (training.eval_ks is {training['eval_ks']}); valid: {', '.join(computed)}"
        )


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"bad --set '{item}': expected section.key=value, e.g. training.rounds=5")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml_load(raw)


def apply_overrides(config: dict, overrides: Iterable[str]) -> dict:
    config = copy.deepcopy(config)
    for item in overrides:
        path, value = _parse_override(item)
        node = config
        for part in path[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"bad --set '{item}': unknown key '{part}' (see config/config.yaml)")
            node = node[part]
        if not isinstance(node, dict) or path[-1] not in node:
            raise ConfigError(f"bad --set '{item}': unknown key '{path[-1]}' (see config/config.yaml)")
        node[path[-1]] = value
    return config


INHERITS_KEY = "inherits"


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`, dicts recursively (as Snakemake merges --configfile)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_with_inherits(path: Path, seen: tuple = ()) -> dict:
    """A config file; one with `inherits: other.yaml` (relative to it) holds only what differs."""
    if path.resolve() in seen:
        raise ConfigError(f"config file '{path}' inherits itself ({' -> '.join(map(str, seen))})")
    try:
        config = yaml_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"config file '{path}' does not hold a mapping of sections")
    parent = config.pop(INHERITS_KEY, None)
    if parent is None:
        return config
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise ConfigError(f"config file '{path}' inherits '{parent}', which is not found at {parent_path}")
    return deep_merge(_read_with_inherits(parent_path, (*seen, path.resolve())), config)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict:
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found: run from the repository root or pass --config PATH")
    config = _read_with_inherits(path)
    config = apply_overrides(config, overrides)
    return validate(config, str(path))


def run_config(config: dict, protocol: str, method: str) -> dict:
    """The resolved hyper-parameters of one run: what its result file records. The method's `training`
    overrides are merged into the shared training block; its presentation keys are left out."""
    if protocol not in config["protocols"]:
        raise ConfigError(f"unknown protocol '{protocol}'; valid: {', '.join(sorted(config['protocols']))}")
    if method not in config["methods"]:
        raise ConfigError(
            f"method '{method}' has no block under 'methods' in the config; "
            f"configured: {', '.join(sorted(config['methods']))}"
        )
    block = method_block(config, method)
    training = {**copy.deepcopy(config["training"]), **block.pop("training", {})}
    hparams = {"base": block.pop("base", method), **{k: v for k, v in block.items() if k not in PRESENTATION_KEYS}}
    return {
        "protocol": copy.deepcopy(config["protocols"][protocol]),
        "data": {k: config["data"][k] for k in ("data_seed", "min_user_interactions", "num_eval_negatives")},
        "training": training,
        "adam": copy.deepcopy(config["adam"]),
        "method": hparams,
        "probe": copy.deepcopy(config["probe"]),
    }


def methods_with_role(config: dict, *roles: str) -> list[str]:
    return [m for m, block in config["methods"].items() if block["role"] in roles]


def probed_methods(config: dict) -> tuple[str, ...]:
    """Grid methods with `probes: true`: the workflow runs their probes on grid.probe_datasets."""
    return tuple(m for m in config["grid"]["methods"] if config["methods"][m].get("probes", False))
