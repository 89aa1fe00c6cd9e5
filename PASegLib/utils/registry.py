"""A small name → factory registry, used for networks and losses.

Example::

    NETWORKS = Registry("network")

    @NETWORKS.register("unet3d")
    def build_unet3d(*, in_channels: int = 1, out_channels: int = 2) -> "torch.nn.Module": ...

    net = NETWORKS.build("unet3d", in_channels=1)
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Maps names to factories; unknown names raise a ``ValueError`` listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering ``factory`` under ``name`` (lower case, unique)."""
        if not name or name != name.lower():
            raise ValueError(f"{self.kind} name must be non-empty lower case, got {name!r}")

        def decorator(factory: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory registered as ``name``."""
        try:
            return self._factories[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._factories)) or '(none)'}"
            ) from None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def names(self) -> List[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
