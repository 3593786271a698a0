"""hsnetlib.registry.Registry, the one registry behind the backbone, benchmark, model and study registries: order,
duplicates, replace, removal, and errors that name the kind and list what is registered."""
import pytest

from hsnetlib.registry import Registry


def test_entries_in_registration_order_with_replace_and_unregister():
    toys = Registry("toy")
    assert toys.register("b", 1) == 1 and toys.register("a", 2) == 2
    assert toys.names() == ["b", "a"] and toys.entries() == [1, 2] and "a" in toys and "c" not in toys
    with pytest.raises(ValueError, match=r"^toy 'a' is already registered \(pass replace=True to replace it\)$"):
        toys.register("a", 3)
    assert toys.register("a", 3, replace=True) == 3 and toys.get("a") == 3 and toys.names() == ["b", "a"]
    toys.unregister("b")
    assert toys.names() == ["a"] and "b" not in toys


def test_unknown_names_list_the_registered_ones():
    toys = Registry("toy")
    toys.register("x", 0)
    toys.register("y", 1)
    for name in ("z", ["unhashable"]):
        with pytest.raises(ValueError, match=r"^unknown toy .*; registered: x, y$"):
            toys.get(name)
    with pytest.raises(ValueError, match="unknown toy 'z'"):
        toys.unregister("z")
    assert toys.names() == ["x", "y"]


def test_instances_share_nothing():
    first, second = Registry("toy"), Registry("toy")
    first.register("x", 0)
    assert second.names() == [] and "x" not in second
