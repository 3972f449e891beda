"""Named-component registries and the one-line configuration error.

Every choice a user makes by name (corpus, objective, architecture, vocabulary, size,
mesh preset) goes through a `Registry`, so a typo fails the same way everywhere: one line
that names the bad value and lists the valid ones, before anything is built or compiled.
This module imports nothing heavy: the model path on GPU hosts (no TensorFlow, no seqio)
uses it too.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
  """A bad configuration value, reported in one line that names the valid choices."""


class Registry(Generic[T]):
  """An ordered name -> component map with helpful errors.

  >>> r = Registry("objective"); r.add("full_lm", 1); r.get("full_lm")
  1
  >>> r.get("ful_lm")
  Traceback (most recent call last):
  ...
  objectax.data.registry.ConfigError: unknown objective 'ful_lm'; valid choices: full_lm
  """

  def __init__(self, kind: str, loader: Optional[Callable[[], None]] = None):
    """`loader`, if given, registers the components (e.g. imports their modules); it runs
    once, the first time the registry is read, so component modules may import the
    module that holds the registry, and each other, in any order."""
    self.kind = kind
    self._items: dict[str, T] = {}
    self._loader = loader

  def _load(self) -> None:
    if self._loader is not None:
      loader, self._loader = self._loader, None  # once, even if loading reads the registry
      loader()

  def add(self, name: str, item: T) -> T:
    if name in self._items and self._items[name] is not item:
      raise ValueError(f"{self.kind} {name!r} is registered twice")
    self._items[name] = item
    return item

  def sort(self, key: Callable[[str, T], object]) -> None:
    """Reorders the components by key(name, component) (stable): listings and the valid
    choices in errors then do not depend on which module happened to be imported first."""
    ranked = sorted(enumerate(self._items.items()), key=lambda i_kv: (key(*i_kv[1]), i_kv[0]))
    self._items = {name: item for _, (name, item) in ranked}

  def get(self, name: str) -> T:
    self._load()
    try:
      return self._items[name]
    except KeyError:
      raise ConfigError(
          f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
      ) from None

  def names(self) -> list[str]:
    self._load()
    return list(self._items)

  def __contains__(self, name: str) -> bool:
    self._load()
    return name in self._items

  def __iter__(self) -> Iterator[str]:
    self._load()
    return iter(self._items)
