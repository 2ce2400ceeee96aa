"""``synalinks_obs.patching.registry``: apply, list, revert exactly."""

from synalinks_obs.patching.registry import PatchRegistry


class Base:
    def hello(self):
        return "base"


class Child(Base):
    def own(self):
        return "own"


def test_revert_restores_own_attributes_and_deletes_added_ones():
    registry = PatchRegistry()
    own, inherited = Child.__dict__["own"], Base.__dict__["hello"]
    assert registry.apply(Child, "own", lambda self: "patched", "test") is own
    assert registry.apply(Child, "hello", lambda self: "patched", "test") is inherited
    assert Child().own() == "patched" and Child().hello() == "patched"
    assert registry.is_patched(Child, "hello") and not registry.is_patched(Base, "hello")
    assert registry.describe() == [f"test: {__name__}.Child.own", f"test: {__name__}.Child.hello"]
    assert registry.revert() == 2
    assert Child.__dict__["own"] is own
    assert "hello" not in Child.__dict__  # deleted, not shadowed: the base shows through
    assert Child().hello() == "base" and len(registry) == 0


def test_apply_is_idempotent_and_revert_by_group():
    registry = PatchRegistry()
    first = lambda self: 1  # noqa: E731
    registry.apply(Child, "own", first, "a")
    registry.apply(Child, "own", lambda self: 2, "a")  # already patched: kept
    registry.apply(Base, "hello", lambda self: 3, "b")
    assert Child.__dict__["own"] is first
    assert registry.revert("b") == 1 and Base().hello() == "base"
    assert registry.is_patched(Child, "own")
    registry.revert()
    assert Child().own() == "own"


def test_modules_are_owners_too():
    import types

    module = types.ModuleType("m")
    module.f = len
    registry = PatchRegistry()
    registry.apply(module, "f", abs, "mod")
    registry.apply(module, "g", abs, "mod")
    assert module.f is abs and module.g is abs
    registry.revert()
    assert module.f is len and not hasattr(module, "g")
