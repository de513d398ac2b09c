"""App names and release versions (DESIGN.md, "Names"), checked against the design's regexes."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyrelctl.errors import BadInput, ExitCode
from pyrelctl.names import app_name_from_release, check_app_name, check_version

# The oracles: DESIGN.md's patterns, written out here independently of names.py.
# fullmatch + ASCII so that neither "$" (trailing newline) nor unicode classes sneak in.
DESIGN_APP = re.compile(r"[a-z][a-z0-9-]{0,30}", re.ASCII)
DESIGN_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_~-]{0,63}", re.ASCII)

APP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
VERSION_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.+_~-"

valid_apps = st.from_regex(DESIGN_APP, fullmatch=True)
valid_versions = st.from_regex(DESIGN_VERSION, fullmatch=True)

#: Characters that look like or sit close to allowed ones, and ones with a meaning in paths.
HOSTILE_CHARS = [
    "\n",
    "\r",
    "\t",
    " ",
    "\x00",
    "/",
    "\\",
    ":",
    "@",
    "%",
    "$",
    "*",
    "\u0455",  # CYRILLIC SMALL LETTER DZE, looks like "s"
    "\u0430",  # CYRILLIC SMALL LETTER A
    "\u043e",  # CYRILLIC SMALL LETTER O
    "\uff11",  # FULLWIDTH DIGIT ONE
    "\u0661",  # ARABIC-INDIC DIGIT ONE (a \d in unicode regexes)
    "\u2010",  # HYPHEN
    "\u2212",  # MINUS SIGN
    "\u00e9",  # e with acute
    "\u0131",  # dotless i
    "\u212a",  # KELVIN SIGN, case-folds to "k"
    "\u200b",  # ZERO WIDTH SPACE
]


def _refused(check: object, value: str) -> BadInput:
    assert callable(check)
    with pytest.raises(BadInput) as info:
        check(value)
    assert info.value.exit_code is ExitCode.BAD_INPUT
    assert int(info.value.exit_code) == 2
    assert repr(value) in info.value.message
    assert info.value.hint
    return info.value


# -- app names -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "shop", "my-app", "a1", "a-", "x" * 31, "a" + "0" * 30, "web-2-api", "z-"],
)
def test_app_name_accepted(name: str) -> None:
    assert check_app_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Shop",
        "SHOP",
        "1shop",
        "-shop",
        "my_app",
        "my.app",
        "shop app",
        "x" * 32,
        "shop\n",
        "\nshop",
        "shop\r\n",
        " shop",
        "shop ",
        "sh\x00op",
        ".",
        "..",
        "../shop",
        "shop/..",
        "a/b",
        "\u0455hop",  # Cyrillic "s"
        "sh\u043ep",  # Cyrillic "o"
        "shop\uff11",  # fullwidth 1
        "shop\u0661",  # Arabic-Indic 1
        "\u212aiosk",  # Kelvin sign for "K"/"k"
        "caf\u00e9",
        "shop\u200b",
        "shop\u2010api",
        "shop.service",
        "shop@1",
    ],
)
def test_app_name_refused(name: str) -> None:
    error = _refused(check_app_name, name)
    assert "app name" in error.message


@settings(max_examples=200)
@given(valid_apps)
def test_every_design_app_name_is_accepted(name: str) -> None:
    assert check_app_name(name) == name


@settings(max_examples=300)
@given(st.text(max_size=40))
@example("shop\n")
@example("x" * 32)
@example("\u0455hop")
def test_any_other_app_name_is_refused(name: str) -> None:
    if DESIGN_APP.fullmatch(name):
        assert check_app_name(name) == name
    else:
        _refused(check_app_name, name)


@settings(max_examples=200)
@given(
    valid_apps,
    st.sampled_from([*HOSTILE_CHARS, "A", "_", ".", "+", "~"]),
    st.integers(min_value=0, max_value=40),
)
def test_a_valid_app_name_with_one_foreign_character_is_refused(
    name: str, bad: str, position: int
) -> None:
    position = min(position, len(name))
    _refused(check_app_name, name[:position] + bad + name[position:])


# -- versions ------------------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [
        "1",
        "1.0.0",
        "1.4.0-rc.1",
        "2.0.0+build.5",
        "1.0~beta",
        "0_1",
        "v1",
        "A",
        "1" * 64,
        "1..2",  # dots inside are fine: it is one path component
        "9.-.+",
    ],
)
def test_version_accepted(version: str) -> None:
    assert check_version(version) == version


@pytest.mark.parametrize(
    "version",
    [
        "",
        ".",
        "..",
        ".1",
        "-1",
        "+1",
        "_1",
        "~1",
        "1" * 65,
        "1.0.0\n",
        "1.0.0\r",
        "1.0 0",
        "1/0",
        "../1",
        "1/..",
        "1\\0",
        "1\x00",
        "1:0",
        "1.0.0%",
        "\uff11.0.0",  # fullwidth 1
        "1.\u0660",  # Arabic-Indic 0
        "\u0430.1",  # Cyrillic a
        "1.0\u200b",
        "1.0\u2010rc",
    ],
)
def test_version_refused(version: str) -> None:
    error = _refused(check_version, version)
    assert "version" in error.message


@settings(max_examples=200)
@given(valid_versions)
def test_every_design_version_is_accepted(version: str) -> None:
    assert check_version(version) == version


@settings(max_examples=300)
@given(st.text(max_size=70))
@example("1.0.0\n")
@example("..")
@example(".")
@example("1" * 65)
def test_any_other_version_is_refused(version: str) -> None:
    if DESIGN_VERSION.fullmatch(version):
        assert check_version(version) == version
    else:
        _refused(check_version, version)


@settings(max_examples=200)
@given(
    valid_versions,
    st.sampled_from(HOSTILE_CHARS),
    st.integers(min_value=0, max_value=70),
)
def test_a_valid_version_with_one_foreign_character_is_refused(
    version: str, bad: str, position: int
) -> None:
    position = min(position, len(version))
    _refused(check_version, version[:position] + bad + version[position:])


@settings(max_examples=100)
@given(valid_versions)
def test_a_version_is_never_a_special_path_component(version: str) -> None:
    assert version not in (".", "..")
    assert "/" not in version
    assert not version.startswith(".")


# -- app_name_from_release -------------------------------------------------------


@pytest.mark.parametrize(
    ("release_name", "app"),
    [
        ("shop", "shop"),
        ("my_app", "my-app"),
        ("a_b_c", "a-b-c"),
        ("my-app", "my-app"),
        ("web2_api", "web2-api"),
    ],
)
def test_app_name_from_release(release_name: str, app: str) -> None:
    assert app_name_from_release(release_name) == app
    assert check_app_name(app_name_from_release(release_name)) == app


@pytest.mark.parametrize("release_name", ["My_App", "1app", "app.name", "a" * 32, "\u0455hop"])
def test_app_name_from_an_unfit_release_name_is_still_checked(release_name: str) -> None:
    # The default app name is derived, never trusted: it must go through the check.
    _refused(check_app_name, app_name_from_release(release_name))


@settings(max_examples=200)
@given(st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True))
def test_every_elixir_style_release_name_gives_a_valid_app_name(release_name: str) -> None:
    app = app_name_from_release(release_name)
    assert "_" not in app
    assert len(app) == len(release_name)
    assert check_app_name(app) == app
    # Only underscores change.
    assert [c for c in app if c != "-"] == [c for c in release_name if c not in "-_"]
