"""Row-count manifests after a restore: which tables are counted, and how counts are compared."""

from covet.engines import compare_manifests, compared_tables

MANIFEST = {
    "consistent": True,
    "tables": {
        "public.small": {"rows": 10, "exact": True},
        "public.other": {"rows": 3, "exact": True},
        "public.large": {"rows": 5_000_000, "exact": False},
    },
}


def test_only_exact_counts_of_a_consistent_manifest_need_counting():
    assert compared_tables(MANIFEST) == ("public.other", "public.small")
    assert compared_tables(MANIFEST, ("public.small", "public.large")) == ("public.small",)
    assert compared_tables({**MANIFEST, "consistent": False}) == ()


def test_an_estimated_table_left_uncounted_is_skipped_not_a_difference():
    counted = {"tables": {"public.small": {"rows": 10, "exact": True}, "public.other": {"rows": 3, "exact": True}}}
    assert compare_manifests(MANIFEST, counted) == {"compared": 2, "differences": [], "skipped": ["public.large"]}


def test_a_missing_or_different_exact_table_is_a_difference():
    counted = {"tables": {"public.small": {"rows": 9, "exact": True}}}
    assert compare_manifests(MANIFEST, counted)["differences"] == [
        {"table": "public.other", "expected": 3, "restored": None},
        {"table": "public.small", "expected": 10, "restored": 9},
    ]
