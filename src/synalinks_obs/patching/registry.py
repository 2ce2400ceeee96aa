"""The one record of every attribute synalinks-obs replaces in code it does not own.

Every patch (Synalinks classes and functions, ``Trainer.fit``/``evaluate``, each MLflow
internal we replace) goes through ``PatchRegistry.apply(owner, name, replacement,
group)``, which remembers exactly what was there (including "nothing in this class's own
``__dict__``", so reverting deletes instead of shadowing the base class). ``revert()``
puts everything back, newest first, so ``uninstrument()`` leaves Synalinks and MLflow
as imported; ``describe()`` lists the patches for ``doctor``. Standard library only.
"""

from __future__ import annotations

MISSING = object()


class Patch:
    """One replaced attribute."""

    __slots__ = ("owner", "name", "original", "replacement", "group")

    def __init__(self, owner, name, original, replacement, group):
        self.owner = owner  # a class, a module or an instance
        self.name = name
        self.original = original  # the owner's own attribute before the patch, or MISSING
        self.replacement = replacement
        self.group = group  # what it is for ("module calls", "training", "mlflow"...)


def _own(owner, name):
    return vars(owner).get(name, MISSING)


def _label(owner) -> str:
    module = getattr(owner, "__module__", None)
    if isinstance(owner, type) and module:
        return f"{module}.{owner.__qualname__}"
    name = getattr(owner, "__name__", None)
    if name is not None:
        return name
    cls = type(owner)  # an instance (MLflow's runtime context object)
    return f"{cls.__module__}.{cls.__qualname__} instance"


def _put_back(patch: Patch) -> None:
    if patch.original is MISSING:
        try:
            delattr(patch.owner, patch.name)
        except AttributeError:
            pass
    else:
        setattr(patch.owner, patch.name, patch.original)


class PatchRegistry:
    """Applies, lists and reverts patches; ``owner.name`` is patched at most once."""

    def __init__(self):
        self._patches: list[Patch] = []
        self._index: dict = {}  # (id(owner), name) -> Patch

    def apply(self, owner, name: str, replacement, group: str) -> object:
        """Replace ``owner.name`` by ``replacement``; the attribute it replaced (or the
        inherited one when the owner had none of its own). Idempotent per (owner, name)."""
        found = self._index.get((id(owner), name))
        if found is not None and found.owner is owner:
            return found.original
        original = _own(owner, name)
        inherited = getattr(owner, name, None) if original is MISSING else original
        setattr(owner, name, replacement)
        patch = Patch(owner, name, original, replacement, group)
        self._patches.append(patch)
        self._index[(id(owner), name)] = patch
        return inherited

    def is_patched(self, owner, name: str) -> bool:
        found = self._index.get((id(owner), name))
        return found is not None and found.owner is owner

    def original(self, owner, name: str, default=MISSING):
        """What ``owner.name`` was before we patched it (``default`` if not patched)."""
        found = self._index.get((id(owner), name))
        return found.original if found is not None and found.owner is owner else default

    def revert(self, group: str | None = None) -> int:
        """Put back every patch (of ``group``), newest first; how many were reverted."""
        kept, reverted = [], 0
        for patch in reversed(self._patches):
            if group is not None and patch.group != group:
                kept.append(patch)
                continue
            _put_back(patch)
            self._index.pop((id(patch.owner), patch.name), None)
            reverted += 1
        self._patches = list(reversed(kept))
        return reverted

    def revert_newest(self, count: int) -> int:
        """Put back the ``count`` most recent patches (newest first); how many were."""
        reverted = 0
        while reverted < count and self._patches:
            patch = self._patches.pop()
            _put_back(patch)
            self._index.pop((id(patch.owner), patch.name), None)
            reverted += 1
        return reverted

    def describe(self) -> list[str]:
        """One line per patch: ``group: owner.name``."""
        return [f"{p.group}: {_label(p.owner)}.{p.name}" for p in self._patches]

    def __len__(self) -> int:
        return len(self._patches)

    def __iter__(self):
        return iter(list(self._patches))
