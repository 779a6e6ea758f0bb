"""Unit tests for statesync.globs: pattern compilation and PathFilter. Pure, no I/O."""
from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statesync.config import DEFAULT_EXCLUDES
from statesync.tree.globs import PathFilter, ancestor_only, compile_pattern, in_scope, rebase

FAST = settings(max_examples=100, deadline=None, database=None)


def matches(pattern: str, path: str) -> bool:
    return compile_pattern(pattern).match(path) is not None


# --- single star and question mark -------------------------------------------------

@pytest.mark.parametrize("path", ["api/a.conf", "api/.conf", "api/x.y.conf"])
def test_a_star_matches_any_name_inside_one_component(path):
    assert matches("api/*.conf", path)


@pytest.mark.parametrize("path", ["api/x/a.conf", "api/x/y/a.conf", "a.conf", "api/a.conf/b"])
def test_a_star_does_not_cross_a_slash(path):
    assert not matches("api/*.conf", path)


def test_a_star_matches_the_empty_string():
    assert matches("ca*", "ca")
    assert matches("*", "x")
    assert not matches("*", "a/b")


def test_a_lone_star_matches_only_top_level_names():
    assert matches("*", "icinga2.state")
    assert not matches("*", "api/zones")


def test_a_question_mark_matches_exactly_one_character_but_not_a_slash():
    assert matches("a?c", "abc")
    assert not matches("a?c", "ac")
    assert not matches("a?c", "abbc")
    assert not matches("a?c", "a/c")


# --- double star --------------------------------------------------------------------

@pytest.mark.parametrize("path", ["a/z", "a/b/z", "a/b/c/d/z"])
def test_a_double_star_between_slashes_spans_any_number_of_components(path):
    assert matches("a/**/z", path)


@pytest.mark.parametrize("path", ["a/bz", "az", "a/z/b", "b/a/z"])
def test_a_double_star_between_slashes_still_needs_whole_components(path):
    assert not matches("a/**/z", path)


@pytest.mark.parametrize("path", ["x", "a", "a/b", "a/b/c/d", ".hidden/x"])
def test_a_lone_double_star_matches_every_path(path):
    assert matches("**", path)


@pytest.mark.parametrize("path", ["x", "a/x", "a/b/x", "a/b/c/d/e/x"])
def test_a_leading_double_star_slash_matches_at_any_depth_including_the_top(path):
    assert matches("**/x", path)


@pytest.mark.parametrize("path", ["ax", "a/xy", "x/y", "a/bx", "xx"])
def test_a_leading_double_star_slash_matches_only_whole_final_components(path):
    assert not matches("**/x", path)


@pytest.mark.parametrize("path", ["f.tmp", ".tmp", "a/f.tmp", "a/b/c/f.tmp"])
def test_double_star_with_a_star_extension_matches_files_at_any_depth(path):
    assert matches("**/*.tmp", path)


@pytest.mark.parametrize("path", ["f.tmpx", "f.tmp/x", "ftmp", "a/f_tmp"])
def test_double_star_with_a_star_extension_does_not_match_other_names(path):
    assert not matches("**/*.tmp", path)


def test_a_double_star_without_slashes_spans_components_inside_a_name():
    assert matches("a/**z", "a/b/c/xz")
    assert matches("a/**z", "a/z")
    assert not matches("a/**z", "b/z")


# --- anchoring -----------------------------------------------------------------------

def test_patterns_are_anchored_at_the_root():
    assert matches("log", "log")
    assert not matches("log", "api/log")
    assert not matches("api", "api/log")


def test_a_pattern_must_match_the_whole_path_not_a_prefix():
    assert not matches("api/lo", "api/log")
    assert not matches("pi/log", "api/log")


# --- trailing slash and /** ---------------------------------------------------------

@pytest.mark.parametrize("pattern", ["api/log/", "api/log/**"])
@pytest.mark.parametrize("path", ["api/log", "api/log/a", "api/log/a/b", "api/log/a/b/c.log"])
def test_a_trailing_slash_or_slash_double_star_matches_the_directory_and_its_subtree(pattern, path):
    assert matches(pattern, path)


@pytest.mark.parametrize("pattern", ["api/log/", "api/log/**"])
@pytest.mark.parametrize("path", ["api/logfile", "api/log2/a", "api", "x/api/log", "api/lo", "api/logs/a"])
def test_a_trailing_slash_or_slash_double_star_does_not_match_siblings_with_a_common_prefix(pattern, path):
    assert not matches(pattern, path)


def test_a_pattern_without_a_trailing_slash_matches_only_that_exact_path():
    assert matches("api/log", "api/log")
    assert not matches("api/log", "api/log/a")


def test_repeated_trailing_slashes_behave_like_one():
    for path in ("api/log", "api/log/a/b", "api/logfile"):
        assert matches("api/log//", path) == matches("api/log/", path)


def test_a_trailing_slash_after_a_double_star_directory_pattern_still_means_a_subtree():
    assert matches("a/**/", "a")
    assert matches("a/**/", "a/b/c")
    assert not matches("a/**/", "ab")


def test_a_subtree_pattern_with_a_star_matches_every_matching_directory_and_its_contents():
    assert matches("zones/*/", "zones/master")
    assert matches("zones/*/", "zones/master/conf/a.conf")
    assert not matches("zones/*/", "zones")


# --- character classes and literals -------------------------------------------------

@pytest.mark.parametrize("path,expected", [("file1.txt", True), ("file9.txt", True),
                                           ("filex.txt", False), ("file10.txt", False)])
def test_a_character_range_matches_one_character_in_the_range(path, expected):
    assert matches("file[0-9].txt", path) is expected


@pytest.mark.parametrize("path,expected", [("xbc", True), ("abc", False), ("bbc", True)])
def test_an_exclamation_mark_negates_a_character_class(path, expected):
    assert matches("[!a]bc", path) is expected


def test_a_character_class_lists_alternatives():
    assert matches("ca.[ck]*", "ca.crt")
    assert matches("ca.[ck]*", "ca.key")
    assert not matches("ca.[ck]*", "ca.pem")


def test_a_closing_bracket_first_in_a_class_is_a_literal_member():
    assert matches("[]]", "]")
    assert matches("[]a]", "a")
    assert not matches("[]a]", "b")


def test_a_backslash_inside_a_class_is_a_literal_backslash():
    assert matches("[\\]", "\\")
    assert not matches("[\\]", "a")


def test_an_unterminated_bracket_is_a_literal_bracket():
    assert matches("a[b", "a[b")
    assert not matches("a[b", "ab")


def test_an_empty_pair_of_brackets_is_literal():
    assert matches("a[]", "a[]")


@pytest.mark.parametrize("pattern", ["a.b", "a+b", "(x)", "a|b", "a{1}", "$x^", "a\\b"])
def test_regular_expression_metacharacters_are_matched_literally(pattern):
    assert matches(pattern, pattern)


def test_a_dot_in_a_pattern_does_not_match_any_character():
    assert not matches("ca.crt", "caxcrt")


def test_a_star_matches_names_containing_a_newline():
    assert matches("*.tmp", "a\nb.tmp")


def test_a_pattern_does_not_match_a_name_with_an_extra_trailing_newline():
    assert not matches("*.tmp", "x.tmp\n")


def test_a_negated_character_class_does_not_match_a_slash():
    assert not matches("a[!b]c", "a/c")


@pytest.mark.parametrize("pattern", ["[z-a]", "[!]"])
def test_a_malformed_character_class_is_rejected_with_value_error(pattern):
    with pytest.raises(ValueError):
        compile_pattern(pattern)


# --- invalid patterns ---------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["", "/", "/etc", "/api/log/", "//x"])
def test_empty_and_absolute_patterns_are_rejected_with_value_error(pattern):
    with pytest.raises(ValueError):
        compile_pattern(pattern)


@pytest.mark.parametrize("kwargs", [{"include": ("",)}, {"include": ("/x",)},
                                    {"exclude": ("",)}, {"exclude": ("ok", "/abs")}])
def test_a_path_filter_rejects_a_bad_pattern_when_it_is_built(kwargs):
    with pytest.raises(ValueError):
        PathFilter(**kwargs)


# --- PathFilter ---------------------------------------------------------------------

def test_a_default_path_filter_includes_everything():
    f = PathFilter()
    for path in ("a", "a/b", "icinga2.state", "api/log/x"):
        assert f.included(path)
        assert not f.excluded(path)


def test_an_exclude_wins_over_an_include():
    f = PathFilter(include=("**",), exclude=("secret",))
    assert not f.included("secret")
    assert f.included("public")


def test_a_path_must_match_an_include_pattern_to_be_included():
    f = PathFilter(include=("ca/", "certs/*.crt"))
    assert f.included("ca")
    assert f.included("ca/ca.crt")
    assert f.included("certs/x.crt")
    assert not f.included("certs/x.key")
    assert not f.included("api/zones")


def test_a_path_filter_without_include_patterns_includes_nothing():
    f = PathFilter(include=())
    assert not f.included("a")


def test_excluded_ignores_include_patterns():
    f = PathFilter(include=("ca/",), exclude=("api/",))
    assert f.excluded("api/x")
    assert not f.excluded("certs/x")


def test_a_path_below_an_excluded_directory_is_excluded():
    f = PathFilter(exclude=("**/*.tmp",))
    assert f.excluded("cache.tmp")
    assert f.excluded("cache.tmp/data")


# --- the default excludes -----------------------------------------------------------

@pytest.mark.parametrize("path", [
    "api/log", "api/log/current", "api/log/1700000000", "api/log/a/b",
    "api/zones-stage", "api/zones-stage/master/_etc/conf.conf",
    "x.tmp", "icinga2.state.tmp", "api/zones/master/a.tmp", "a/b/c/d.tmp",
    "a.swp", "api/.x.conf.swp", "notes~", "api/zones/z/a.conf~",
])
def test_the_default_excludes_leave_out_logs_staging_and_temporary_files(path):
    assert PathFilter(exclude=DEFAULT_EXCLUDES).excluded(path)
    assert not PathFilter(exclude=DEFAULT_EXCLUDES).included(path)


@pytest.mark.parametrize("path", [
    "ca", "ca/ca.crt", "ca/ca.key", "certs", "certs/x.key", "certs/x.crt", "icinga2.state",
    "api", "api/zones", "api/zones/master/_etc/hosts.conf", "api/packages",
    "api/packages/_api/active.conf", "api/logfile", "api/log2", "api/zones-stagex",
    "x.tmpl", "tmp", "a/tmp",
])
def test_the_default_excludes_keep_certificates_state_zones_and_packages(path):
    assert not PathFilter(exclude=DEFAULT_EXCLUDES).excluded(path)
    assert PathFilter(exclude=DEFAULT_EXCLUDES).included(path)


def test_the_default_excludes_do_not_exclude_a_nested_api_log():
    assert not PathFilter(exclude=DEFAULT_EXCLUDES).excluded("x/api/log/a")


# --- properties ---------------------------------------------------------------------

_NAME = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
_PATH = st.lists(_NAME, min_size=1, max_size=6).map("/".join)


@FAST
@given(_PATH)
def test_any_path_is_matched_by_a_lone_double_star(path):
    assert matches("**", path)


@FAST
@given(_PATH)
def test_any_path_is_matched_by_double_star_slash_its_last_component(path):
    assert matches("**/" + path.rsplit("/", 1)[-1], path)


@FAST
@given(_PATH)
def test_any_path_lies_in_the_subtree_of_its_first_component(path):
    top = path.split("/")[0]
    assert matches(top + "/", path)
    assert matches(top + "/**", path)


@FAST
@given(_PATH, _PATH)
def test_a_pattern_without_wildcards_matches_only_the_identical_path(pattern, path):
    assert matches(pattern, path) == (pattern == path)


@FAST
@given(_PATH, _PATH)
def test_a_subtree_pattern_matches_exactly_the_path_and_paths_below_it(base, path):
    expected = path == base or path.startswith(base + "/")
    assert matches(base + "/", path) == expected


_PCOMP = st.text(alphabet="ab*?", min_size=1, max_size=5).filter(lambda s: "**" not in s)
_SCOMP = st.text(alphabet="ab", min_size=0, max_size=5)


@FAST
@given(st.lists(_PCOMP, min_size=1, max_size=4), st.lists(_SCOMP, min_size=1, max_size=4))
def test_star_and_question_mark_match_component_by_component_like_fnmatch(pcomps, scomps):
    expected = len(pcomps) == len(scomps) and all(
        fnmatch.fnmatchcase(s, p) for p, s in zip(pcomps, scomps, strict=True))
    assert matches("/".join(pcomps), "/".join(scomps)) == expected


# -- the scope of named roots ------------------------------------------------------------

SCOPE = ("etc/icinga2", "var/lib/icinga2")


def test_a_scope_keeps_the_named_subtrees_and_their_ancestors_as_directories_only():
    f = PathFilter(scope=SCOPE)
    for d in ("etc", "var", "var/lib", "etc/icinga2", "var/lib/icinga2", "var/lib/icinga2/ca"):
        assert f.wanted(d, True), d
    for p in ("etc/icinga2/constants.conf", "var/lib/icinga2/ca/ca.crt", "var/lib/icinga2/icinga2.state"):
        assert f.wanted(p, False) and f.included(p), p
    # a file where an ancestor directory belongs is no part of either subtree
    assert not f.wanted("var", False) and not f.included("var/lib")


def test_a_scope_leaves_out_everything_beside_the_named_subtrees_and_never_walks_into_it():
    f = PathFilter(scope=SCOPE)
    for p in ("var/log", "var/log/icinga2/icinga2.log", "var/cache/icinga2/x", "var/run", "var/spool/icinga2",
              "etc/hosts", "etc/icinga2-old", "var/lib/other", "other", "var/libx"):
        assert f.excluded(p) and f.excluded(p, ancestors=False), p
        assert not f.wanted(p, True) and not f.wanted(p, False), p


def test_an_empty_scope_is_the_whole_tree():
    assert in_scope((), "anything/at/all") and not ancestor_only((), "x")
    assert PathFilter().wanted("var/log/x", False)


def test_scope_and_excludes_apply_together():
    f = PathFilter(exclude=rebase("var/lib/icinga2", DEFAULT_EXCLUDES), scope=SCOPE)
    assert not f.wanted("var/lib/icinga2/api/log/current", False)
    assert not f.wanted("etc/icinga2/zones.conf.swp", False)
    assert f.wanted("var/lib/icinga2/api/zones/master/x.conf", False)


def test_rebase_prefixes_patterns_with_the_subtree_but_leaves_any_depth_patterns_alone():
    assert rebase("var/lib/icinga2", ("api/log/", "ca/ca.key", "certs/*.key", "**/*.tmp")) == (
        "var/lib/icinga2/api/log/", "var/lib/icinga2/ca/ca.key", "var/lib/icinga2/certs/*.key", "**/*.tmp")
    assert rebase("", ("api/log/", "**/*.tmp")) == ("api/log/", "**/*.tmp")
