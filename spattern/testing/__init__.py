"""Testing helpers for spattern and for users' own patterns.

- ``spattern.testing.strategies``: hypothesis strategies (``families()``, ``patterns()``,
  ``lengths()``, ``blocks()``, ``geometries()``, ``layouts()``); needs ``hypothesis``
  (``pip install spattern[dev]``).
- property assertions (no hypothesis needed), each raising ``AssertionError`` that says what
  differed where: ``assert_causal``, ``assert_layout_matches_mask``, ``assert_valid_layout``,
  ``assert_paths_agree``, ``assert_algebra_laws``, ``assert_closed_form_matches``,
  ``assert_roundtrip``, and ``check_pattern`` that runs all that apply.

    import spattern as sp
    from spattern.testing import check_pattern

    checker = sp.custom(lambda q, k: (q // 16) % 2 == (k // 16) % 2, name="checker")
    check_pattern(checker & sp.causal, sizes=(33, 100))
"""

from spattern.testing.properties import (
    assert_algebra_laws,
    assert_causal,
    assert_closed_form_matches,
    assert_layout_equals_masks,
    assert_layout_matches_mask,
    assert_masks_equal,
    assert_paths_agree,
    assert_roundtrip,
    assert_valid_layout,
    check_pattern,
    expected_masks,
)

__all__ = [
    "assert_algebra_laws", "assert_causal", "assert_closed_form_matches", "assert_layout_equals_masks",
    "assert_layout_matches_mask", "assert_masks_equal", "assert_paths_agree", "assert_roundtrip",
    "assert_valid_layout", "check_pattern", "expected_masks", "strategies",
]


def __getattr__(name):
    if name == "strategies":
        try:
            import importlib

            return importlib.import_module("spattern.testing.strategies")
        except ImportError as e:  # hypothesis missing
            raise ImportError(
                f"spattern.testing.strategies needs hypothesis ({e}); install it with "
                "pip install 'spattern[dev]' or pip install hypothesis"
            ) from e
    raise AttributeError(f"module 'spattern.testing' has no attribute {name!r}")
