import pytest

from repro.errors import UsageError
from repro.registry import Registry


def test_register_twice_is_an_error():
    registry: Registry[int] = Registry("thing")
    registry.register("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a", 2)


def test_unknown_name_lists_the_valid_ones_on_one_line():
    registry: Registry[int] = Registry("thing")
    registry.register("a", 1)
    registry.register("b", 2)
    with pytest.raises(UsageError) as error:
        registry["c"]
    assert str(error.value) == "unknown thing 'c'; valid: a, b"
    assert error.value.exit_code == 2
    assert registry["b"] == 2 and "a" in registry and len(registry) == 2
