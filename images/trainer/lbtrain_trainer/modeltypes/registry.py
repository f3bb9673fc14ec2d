"""The one registry of model types: the built-in six and those of installed plugins.

A team adds a model type without forking lbtrain: a distribution installed into an image built
``FROM`` the trainer image declares an entry point in the group :data:`ENTRY_POINT_GROUP`, whose
name is the model type and whose object is a :class:`~lbtrain_trainer.modeltypes.base.ModelType`
subclass (or instance)::

    [project.entry-points."lbtrain.model_types"]
    polygon = "lbtrain_polygon:Polygon"

Like Kueue's integration manager and Kubeflow Trainer's runtime registry, registration is
checked, not trusted: a plugin that cannot be imported, leaves an abstract method or a required
attribute out, names a type other than its entry point, or registers a name that is already
taken (a built-in or another plugin) stops the registry with a :class:`PluginError` naming the
distribution, instead of training with half a type or whichever plugin was found first. An
unknown name is an :class:`UnknownModelTypeError` (exit 65) listing the known ones; nothing
falls through to a default type.

The registry is built once per process, on first use (:func:`registry`); :func:`reset` forgets
it (a test that installs a plugin).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lbtrain_trainer.errors import PluginError, UnknownModelTypeError
from lbtrain_trainer.modeltypes.base import ANSWER_KINDS, MEDIA_KINDS, ModelType

ENTRY_POINT_GROUP = "lbtrain.model_types"
BUILT_IN = "built-in"
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Registration:
    """A registered type and where it comes from: ``origin`` is ``built-in`` or the plugin's
    distribution and version; ``source`` the module or entry point value."""

    model_type: ModelType
    origin: str
    source: str

    @property
    def name(self) -> str:
        return self.model_type.name


class Registry:
    """The registered types by name, built-ins first (in ``lbtrain.contract.MODEL_TYPES``
    order), then plugins by name."""

    def __init__(self, registrations: Iterable[Registration]) -> None:
        self._by_name: dict[str, Registration] = {}
        for registration in registrations:
            taken = self._by_name.get(registration.name)
            if taken is not None:
                raise PluginError(
                    f"model type {registration.name!r} from {registration.origin} "
                    f"({registration.source}) is already registered by {taken.origin} "
                    f"({taken.source}); uninstall one of them"
                )
            self._by_name[registration.name] = registration

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def registrations(self) -> tuple[Registration, ...]:
        return tuple(self._by_name.values())

    def get(self, name: str) -> ModelType:
        """The type called ``name`` (case-insensitively: Labelbox's seed list spells one
        ``Text_multi_classification``); :class:`UnknownModelTypeError` if none is."""
        registration = self._by_name.get(name.strip().lower())
        if registration is None:
            raise UnknownModelTypeError(
                f"unknown model type {name!r}; known model types: {', '.join(self.names())} "
                "(`lbtrain trainer types` lists them with where each comes from)"
            )
        return registration.model_type


def builtin_types() -> tuple[ModelType, ...]:
    """The six types lbtrain ships, in ``lbtrain.contract.MODEL_TYPES`` order."""
    from lbtrain_trainer.modeltypes import (
        bounding_box,
        image_multi_classification,
        image_single_classification,
        ner,
        text_multi_classification,
        text_single_classification,
    )

    return (
        bounding_box.BoundingBox(),
        ner.Ner(),
        image_single_classification.ImageSingleClassification(),
        image_multi_classification.ImageMultiClassification(),
        text_single_classification.TextSingleClassification(),
        text_multi_classification.TextMultiClassification(),
    )


def check_complete(model_type: ModelType, where: str) -> None:
    """Refuse a type with a required attribute missing or out of range (``where`` names it in
    the error). Abstract methods left out are refused when the class is instantiated."""
    problems = []
    for attribute in ("name", "media", "headline_metric"):
        value = getattr(model_type, attribute, None)
        if not isinstance(value, str) or not value:
            problems.append(f"{attribute} is not set")
    name = getattr(model_type, "name", None)
    if isinstance(name, str) and name and not _NAME.fullmatch(name):
        problems.append(f"name {name!r} is not lower-case letters, digits and underscores")
    if getattr(model_type, "media", None) not in MEDIA_KINDS:
        problems.append(f"media must be one of {', '.join(MEDIA_KINDS)}")
    if model_type.answer_kind not in ANSWER_KINDS:
        problems.append("answer_kind must be None, 'radio' or 'checklist'")
    if not isinstance(model_type.production_defaults, Mapping):
        problems.append("production_defaults must be a mapping")
    if problems:
        raise PluginError(f"model type {where} is incomplete: {'; '.join(problems)}")


def _from_entry_point(entry_point: importlib.metadata.EntryPoint) -> Registration:
    dist = entry_point.dist
    origin = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    where = f"{entry_point.name!r} from {origin} ({entry_point.value})"
    try:
        loaded = entry_point.load()
    except Exception as exc:  # any import error of someone else's package
        raise PluginError(f"model type {where} cannot be loaded: {exc!r}") from exc
    if isinstance(loaded, type) and issubclass(loaded, ModelType):
        try:
            instance = loaded()
        except TypeError as exc:  # abstract methods left out
            raise PluginError(f"model type {where} is incomplete: {exc}") from exc
    elif isinstance(loaded, ModelType):
        instance = loaded
    else:
        raise PluginError(
            f"model type {where} is not a lbtrain_trainer.modeltypes.base.ModelType subclass "
            "or instance"
        )
    check_complete(instance, where)
    if instance.name != entry_point.name:
        raise PluginError(
            f"model type {where} calls itself {instance.name!r}: the entry point's name must "
            "be the type's name"
        )
    return Registration(instance, origin, entry_point.value)


def build(*, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None) -> Registry:
    """A registry of the built-ins and ``entry_points`` (default: the installed plugins')."""
    found = (
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry_points is None
        else entry_points
    )
    registrations = []
    for model_type in builtin_types():
        check_complete(model_type, repr(model_type.name))
        registrations.append(Registration(model_type, BUILT_IN, type(model_type).__module__))
    plugins = [_from_entry_point(ep) for ep in found]
    registrations += sorted(plugins, key=lambda r: (r.name, r.origin))
    return Registry(registrations)


@functools.cache
def registry() -> Registry:
    """The process's registry, built on first use."""
    return build()


def reset() -> None:
    """Forget the process's registry: the next call finds the installed plugins again."""
    registry.cache_clear()


def get(name: str) -> ModelType:
    """The registered type called ``name``; :class:`UnknownModelTypeError` (exit 65) naming
    the known types if there is none."""
    return registry().get(name)


def known_types() -> tuple[str, ...]:
    return registry().names()
