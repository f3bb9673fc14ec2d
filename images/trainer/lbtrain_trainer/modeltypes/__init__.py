"""Model types: one module per type, one interface, one registry.

:mod:`~lbtrain_trainer.modeltypes.base` defines the interface (:class:`ModelType`), one module
per built-in type implements it (``bounding_box``, ``ner``, ``image_single_classification``,
``image_multi_classification``, ``text_single_classification``, ``text_multi_classification``),
and :mod:`~lbtrain_trainer.modeltypes.registry` holds them with the types other installed
distributions add through the ``lbtrain.model_types`` entry-point group. The stages ask the
registry; only the type modules know what a type name means.

This file imports nothing, so that importing the interface never loads every type.
"""
