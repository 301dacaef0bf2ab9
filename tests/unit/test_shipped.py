"""pyvmm.shipped: finding the guests and kernels in a wheel or a checkout, and re-running pyvmm."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import pyvmm
from pyvmm.shipped import (
    SHIPPED_DIRECTORIES,
    BuildHint,
    ShippedFileMissing,
    build_hint,
    data_root,
    pyvmm_child,
    resolve_image,
    shipped_file,
)

REPO = Path(__file__).resolve().parents[2]


def make_wheel_layout(tmp_path: Path) -> Path:
    """site-packages/pyvmm with _shipped/ beside its modules, as the wheel installs it."""
    package = tmp_path / "site-packages" / "pyvmm"
    (package / "_shipped" / "guests" / "tests").mkdir(parents=True)
    (package / "_shipped" / "guests" / "hello.bin").write_bytes(b"wheel hello")
    (package / "_shipped" / "guests" / "tests" / "spin.bin").write_bytes(b"wheel spin")
    # A guests/ beside site-packages' pyvmm must not be taken for the shipped one.
    (tmp_path / "site-packages" / "guests").mkdir()
    (tmp_path / "site-packages" / "guests" / "hello.bin").write_bytes(b"stray")
    return package


def make_checkout_layout(tmp_path: Path) -> Path:
    """A checkout: pyvmm/ with guests/ and benchmarks/kernels/ beside it."""
    root = tmp_path / "checkout"
    (root / "pyvmm").mkdir(parents=True)
    (root / "guests").mkdir()
    (root / "guests" / "hello.bin").write_bytes(b"checkout hello")
    (root / "benchmarks" / "kernels").mkdir(parents=True)
    (root / "benchmarks" / "kernels" / "kernels.bin").write_bytes(b"kernels")
    (root / "setup.py").write_text("")
    return root / "pyvmm"


def test_a_wheel_uses_its_shipped_copies(tmp_path: Path) -> None:
    package = make_wheel_layout(tmp_path)
    assert data_root(package) == package / "_shipped"
    assert shipped_file("guests/hello.bin", package).read_bytes() == b"wheel hello"
    assert shipped_file("guests/tests/spin.bin", package).read_bytes() == b"wheel spin"


def test_a_checkout_uses_the_repository_files(tmp_path: Path) -> None:
    package = make_checkout_layout(tmp_path)
    assert data_root(package) == package.parent
    assert shipped_file("guests/hello.bin", package).read_bytes() == b"checkout hello"
    kernels = shipped_file("benchmarks/kernels/kernels.bin", package)
    assert kernels == package.parent / "benchmarks" / "kernels" / "kernels.bin"


def test_this_checkout_ships_the_demo_files() -> None:
    # The tests run from the checkout (directly or through the editable install).
    assert Path(pyvmm.__file__).resolve().parent == REPO / "pyvmm"
    for name in ("guests/hello.bin", "guests/hostile.bin", "benchmarks/kernels/kernels.bin"):
        assert shipped_file(name) == REPO / name


def test_a_missing_shipped_file_names_itself_and_where_it_looked(tmp_path: Path) -> None:
    package = make_wheel_layout(tmp_path)
    with pytest.raises(ShippedFileMissing) as raised:
        shipped_file("guests/user.bin", package)
    assert str(raised.value) == (
        f"guests/user.bin is missing from this pyvmm installation ({package / '_shipped'})"
    )


@pytest.mark.parametrize(
    "name",
    ["setup.py", "guests", "guestsx/hello.bin", "/etc/passwd", "guests/../setup.py", ""],
)
def test_only_files_under_the_shipped_directories_are_found(tmp_path: Path, name: str) -> None:
    package = make_checkout_layout(tmp_path)  # setup.py exists there, yet is not shipped
    with pytest.raises(ShippedFileMissing, match="not a file pyvmm ships"):
        shipped_file(name, package)
    assert SHIPPED_DIRECTORIES == ("guests", "benchmarks/kernels")


def test_resolve_image_finds_a_shipped_guest_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_wheel_layout(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shipped = str(package / "_shipped" / "guests" / "hello.bin")
    assert resolve_image("guests/hello.bin", package) == shipped
    assert resolve_image("./guests/hello.bin", package) == shipped
    assert resolve_image("guests/tests/spin.bin", package) == str(
        package / "_shipped" / "guests" / "tests" / "spin.bin"
    )


def test_resolve_image_prefers_a_file_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_wheel_layout(tmp_path)
    work = tmp_path / "work"
    (work / "guests").mkdir(parents=True)
    (work / "guests" / "hello.bin").write_bytes(b"my own")
    monkeypatch.chdir(work)
    assert resolve_image("guests/hello.bin", package) == "guests/hello.bin"


@pytest.mark.parametrize(
    "path",
    [
        "guests/nonexistent.bin",  # not shipped: the caller reports it as missing
        "hello.bin",  # not under guests/
        "benchmarks/kernels/kernels.bin",  # shipped, but not a guest
        "guests/../setup.py",
        "/nonexistent/guests/hello.bin",
    ],
)
def test_resolve_image_leaves_anything_else_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    package = make_checkout_layout(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert resolve_image(path, package) == path


def test_resolve_image_with_this_installation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_image("guests/hello.bin") == str(REPO / "guests" / "hello.bin")


# --- a guest that is not built yet ---------------------------------------------------------
# `pyvmm boot guests/template/boot.bin` in a fresh clone, or from another directory, said
# only "No such file or directory": the template ships as sources, to be built by the user.

TEMPLATE_MAKEFILE = "ALL := $(OUT)/boot.bin $(OUT)/hello64.elf\n$(OUT)/boot.bin: $(SRC)/boot.s\n"


def add_template(root: Path) -> Path:
    """guests/template's sources under `root` (a checkout, or a wheel's _shipped/)."""
    template = root / "guests" / "template"
    template.mkdir(parents=True)
    (template / "Makefile").write_text(TEMPLATE_MAKEFILE)
    (template / "boot.s").write_text("hlt\n")
    (template / "hello.c").write_text("void _start(void) {}\n")
    return template


def test_a_guest_not_built_in_this_directory_is_built_with_make_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_checkout_layout(tmp_path)
    add_template(package.parent)
    monkeypatch.chdir(package.parent)
    hint = BuildHint("make -C guests/template", "guests/template")
    assert build_hint("guests/template/boot.bin", package) == hint
    assert build_hint("./guests/template/hello64.elf", package) == hint  # named by the Makefile
    monkeypatch.chdir(package.parent / "guests" / "template")
    assert build_hint("boot.bin", package) == BuildHint("make", ".")


def test_a_shipped_guest_not_built_is_built_here_from_the_shipped_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From another directory: make -f keeps it, so the file lands where the user named it."""
    package = make_wheel_layout(tmp_path)
    template = add_template(package / "_shipped")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert build_hint("guests/template/boot.bin", package) == BuildHint(
        f"make -f {template / 'Makefile'} OUT=guests/template", str(template)
    )


def test_a_guest_named_by_its_stem_in_the_makefile_above(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """guests/Makefile lists `tests/spin`, built from tests/spin.s beside the image."""
    work = tmp_path / "work"
    (work / "guests" / "tests").mkdir(parents=True)
    (work / "guests" / "Makefile").write_text("REAL := hello tests/spin\n")
    (work / "guests" / "tests" / "spin.s").write_text("jmp .\n")
    monkeypatch.chdir(work)
    package = make_wheel_layout(tmp_path)
    assert build_hint("guests/tests/spin.bin", package) == BuildHint("make -C guests", "guests")
    # `hello` is named too, but no hello.s lies beside a guests/hello.bin here: no hint.
    assert build_hint("guests/hello.bin", package) is None


@pytest.mark.parametrize(
    "path",
    [
        "guests/template/bot.bin",  # a typo: no Makefile names it, no bot.s
        "guests/template/boot.elf",  # boot.s is there, but the Makefile never says boot
        "guests/nonexistent/boot.bin",
        "kernel.bin",
        "/nonexistent/kernel.bin",
    ],
)
def test_no_build_hint_without_a_makefile_that_builds_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    package = make_checkout_layout(tmp_path)
    add_template(package.parent)
    monkeypatch.chdir(package.parent)
    assert build_hint(path, package) is None


def test_a_child_imports_the_parents_pyvmm_not_one_on_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoy pyvmm on PYTHONPATH would print 'decoy'; the child must list the demos."""
    decoy = tmp_path / "decoy"
    (decoy / "pyvmm").mkdir(parents=True)
    (decoy / "pyvmm" / "__init__.py").write_text("")
    (decoy / "pyvmm" / "__main__.py").write_text("print('decoy')\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(decoy))
    child = pyvmm_child("demo", cwd=work)
    assert child.env["PYTHONPATH"].split(os.pathsep) == [str(REPO), str(decoy)]
    result = subprocess.run(
        child.argv, cwd=work, env=child.env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("demos (run one with: pyvmm demo NAME):")


def test_a_child_is_never_started_where_a_pyvmm_would_shadow_it(tmp_path: Path) -> None:
    (tmp_path / "pyvmm").mkdir()
    with pytest.raises(ValueError, match="would import"):
        pyvmm_child("boot", "x.bin", cwd=tmp_path)
