"""Build registered classes by their ``name`` attribute, from keyword arguments or a config section.

Low-light pipelines (:data:`wnlb_d2.data.synthesis.LOW_LIGHT_PIPELINE_REGISTRY`) and enhancers
(:data:`wnlb_d2.enhance.ENHANCER_REGISTRY`) are detectron2 ``Registry`` objects holding
classes. Each class has a ``name`` (the spelling used in configs, e.g. ``"lv2021"``), and its
constructor's keyword arguments are the keys of its config section upper-cased
(``INPUT.LOW_LIGHT.LV2021.GAMMA`` -> ``gamma``). A user adds their own with
``@LOW_LIGHT_PIPELINE_REGISTRY.register()`` on a class with a ``name``, as they register a
backbone.
"""

import inspect

from .params import ParameterError

__all__ = ["registered_names", "lookup", "constructor_arguments", "build_named", "build_from_section"]


def _by_name(registry):
    table = {}
    for _, cls in registry:
        name = getattr(cls, "name", "")
        if not name:
            raise ValueError(f"registered class {cls.__name__} has no 'name' attribute (the name configs select it by)")
        if name in table and table[name] is not cls:
            raise ValueError(f"two registered classes are named {name!r}: {table[name].__name__} and {cls.__name__}")
        table[name] = cls
    return table


def registered_names(registry):
    """The ``name`` of every registered class, in registration order."""
    return tuple(_by_name(registry))


def lookup(registry, name, kind, where):
    """The class registered as ``name``.

    Args:
        registry (Registry): e.g. the low-light pipeline registry.
        name (str): the class's ``name``.
        kind (str): what it is, for the message ("low-light pipeline").
        where (str): where the name came from, for the message ("INPUT.LOW_LIGHT.PIPELINE").

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    table = _by_name(registry)
    if name not in table:
        raise ValueError(f"{where}: unknown {kind} {name!r}, expected one of {tuple(table)}")
    return table[name]


def constructor_arguments(cls):
    """The keyword arguments of ``cls.__init__`` (without ``self``), in order."""
    return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")


def build_named(registry, name, kwargs, kind, where):
    """Build ``name`` with ``kwargs`` after checking that every key is a constructor argument.

    Raises:
        ValueError: unknown name or argument (the message lists the allowed ones).
        ParameterError: a bad value, from the constructor (names the argument).
    """
    cls = lookup(registry, name, kind, where)
    allowed = constructor_arguments(cls)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"{kind} {name!r}: unknown parameter(s) {unknown}, expected some of {list(allowed)}")
    return cls(**kwargs)


def build_from_section(registry, name, section, key_prefix, kind, where):
    """Build ``name`` from a config section whose keys are its arguments upper-cased.

    Args:
        registry (Registry): where ``name`` is registered.
        name (str): the class's ``name``.
        section (Mapping or None): e.g. ``cfg.INPUT.LOW_LIGHT.LV2021``; None or missing keys
            keep the constructor's defaults.
        key_prefix (str): the section's full key, e.g. ``"INPUT.LOW_LIGHT.LV2021"``.
        kind (str): what is built, for messages.
        where (str): the config key that named it, e.g. ``"INPUT.LOW_LIGHT.PIPELINE"``.

    Raises:
        ValueError: an unknown name or key or a bad value; the message names the full config key,
            e.g. ``INPUT.LOW_LIGHT.LV2021.GAMMA: expected low <= high, got (3, 2)``.
    """
    cls = lookup(registry, name, kind, where)
    expected = {a.upper(): a for a in constructor_arguments(cls)}
    values = dict(section or {})
    unknown = sorted(set(values) - set(expected))
    if unknown:
        raise ValueError(f"{key_prefix}: unknown key(s) {unknown}, expected some of {sorted(expected)}")
    try:
        return cls(**{expected[k]: v for k, v in values.items()})
    except ParameterError as e:
        raise ValueError(f"{key_prefix}.{e.key.upper()}: {e.detail}") from e
