"""Unpacking .deb files and checking the kernel configuration, without apt or network."""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path

import pytest

from tests.linux.debian import (
    DebianError,
    PackageInfo,
    ar_members,
    deb_file_name,
    extract_files,
    parse_control,
    parse_depends,
)
from tests.linux.kernels import config_lines, dropped_settings, tiny_key


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        directory = tarfile.TarInfo("./boot/subdir")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
    return buffer.getvalue()


FILES = {"./boot/vmlinuz-6.1.0-test": b"odd-sized kernel", "./usr/share/doc/x": b"doc"}


def deb_with(data_name: str, data: bytes) -> bytes:
    return ar_archive(
        [
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", lzma.compress(tar_of({}))),
            (data_name, data),
        ]
    )


@pytest.mark.parametrize("compression", ["xz", "zst", "gz", "none"])
def test_extract_files_from_each_data_compression(tmp_path: Path, compression: str) -> None:
    tar = tar_of(FILES)
    if compression == "xz":
        data = lzma.compress(tar)
    elif compression == "zst":
        zstandard = pytest.importorskip("zstandard")
        data = zstandard.ZstdCompressor().compress(tar)
    elif compression == "gz":
        import gzip

        data = gzip.compress(tar)
    else:
        data = tar
    name = "data.tar" if compression == "none" else f"data.tar.{compression}"
    deb = tmp_path / "test.deb"
    deb.write_bytes(deb_with(name, data))
    found = extract_files(deb, lambda path: path.startswith("boot/"))
    assert found == {"boot/vmlinuz-6.1.0-test": b"odd-sized kernel"}


def test_ar_members_are_two_aligned() -> None:
    archive = ar_archive([("a/", b"1"), ("b", b"22"), ("c", b"333")])
    assert list(ar_members(archive)) == [("a", b"1"), ("b", b"22"), ("c", b"333")]


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (b"PK\x03\x04", "no !<arch>"),
        (ar_archive([("x", b"abc")])[:-2], "past the end"),
        (b"!<arch>\n" + b"x" * 60, "bad ar member header"),
    ],
)
def test_bad_ar_archives(archive: bytes, message: str) -> None:
    with pytest.raises(DebianError, match=message):
        list(ar_members(archive))


def test_deb_without_data(tmp_path: Path) -> None:
    deb = tmp_path / "x.deb"
    deb.write_bytes(ar_archive([("debian-binary", b"2.0\n")]))
    with pytest.raises(DebianError, match=r"no data\.tar"):
        extract_files(deb, lambda path: True)


def test_control_and_depends() -> None:
    text = (
        "Package: linux-image-cloud-amd64\nVersion: 6.1.192-3\n"
        "Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3), foo:any | bar\n"
        "Description: meta\n more text\n\nPackage: second\n"
    )
    fields = parse_control(text)
    assert fields["Version"] == "6.1.192-3"
    assert fields["Description"] == "meta\nmore text"
    assert "second" not in fields.values()
    assert parse_depends(fields["Depends"]) == ("linux-image-6.1.0-57-cloud-amd64", "foo")


def test_deb_file_name_quotes_the_epoch() -> None:
    info = PackageInfo("busybox-static", "1:1.35.0-4", (), None, None)
    assert deb_file_name(info) == "busybox-static_1%3a1.35.0-4_amd64.deb"
    source = PackageInfo("linux-source-6.1", "6.1.192-3", (), None, None, "all")
    assert deb_file_name(source) == "linux-source-6.1_6.1.192-3_all.deb"


FRAGMENT = """# comment
CONFIG_A=y
# CONFIG_B is not set
CONFIG_C="text"
# CONFIG_D is not set
"""


def test_config_lines_and_dropped_settings() -> None:
    assert config_lines(FRAGMENT) == [
        "CONFIG_A=y",
        "# CONFIG_B is not set",
        'CONFIG_C="text"',
        "# CONFIG_D is not set",
    ]
    final = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="text"\n'
    assert dropped_settings(FRAGMENT, final) == []  # D absent: its menu is off, same thing
    assert dropped_settings(FRAGMENT, "CONFIG_B=y\nCONFIG_D=y\n") == [
        "CONFIG_A=y",
        "# CONFIG_B is not set",
        'CONFIG_C="text"',
        "# CONFIG_D is not set",
    ]


def test_the_kept_fragment_is_well_formed() -> None:
    fragment = (Path(__file__).parents[2] / "guests/linux/tiny-x86_64.config").read_text()
    lines = config_lines(fragment)
    assert "CONFIG_64BIT=y" in lines and "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y" in lines
    names = [line.split("=")[0].removeprefix("# ").split()[0] for line in lines]
    assert len(names) == len(set(names)), "a setting given twice"
    for line in fragment.splitlines():
        assert not line.strip() or line.startswith("#") or line in lines, line


def test_tiny_key_changes_with_each_input() -> None:
    keys = {tiny_key(b"a", "1"), tiny_key(b"b", "1"), tiny_key(b"a", "2")}
    assert len(keys) == 3 and tiny_key(b"a", "1") == tiny_key(b"a", "1")
