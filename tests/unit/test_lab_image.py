"""The image's inputs, content tag and pruning rule, and podman's containers.conf (pure)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lab import image, podman
from lab.errors import LabError

FILES = {"agent/main.py": b"print('agent')\n", "pyproject.toml": b"[project]\nname='tortie'\n"}
SHIM = b"\x7fELF shim"
CONTAINERFILE = b"ARG BASE\nFROM ${BASE}\n"


def tag(containerfile: bytes = CONTAINERFILE, base: str = "e51945a9fdd9",
        files: dict[str, bytes] | None = None, shim: bytes = SHIM) -> str:
    return image.content_tag(containerfile, base, FILES if files is None else files, shim)


def test_same_inputs_same_tag() -> None:
    first = tag()
    assert first == tag(files=dict(reversed(FILES.items())))  # order of listing is no input
    assert len(first) == 12 and int(first, 16) >= 0


@pytest.mark.parametrize("change", [
    {"containerfile": CONTAINERFILE + b"LABEL x=1\n"},
    {"base": "000000000000"},
    {"shim": SHIM + b"\0"},
    {"files": {**FILES, "agent/main.py": b"print('agent!')\n"}},
    {"files": {**FILES, "agent/new.py": b""}},  # an added (even empty) file
    {"files": {"pyproject.toml": FILES["pyproject.toml"]}},  # a removed file
    {"files": {"agent/main2.py": FILES["agent/main.py"],
               "pyproject.toml": FILES["pyproject.toml"]}},  # a renamed file
])
def test_any_input_change_changes_the_tag(change: dict) -> None:
    assert tag(**change) != tag()


def test_framing_keeps_content_from_moving_between_files() -> None:
    # Without names and lengths in the stream, these two would hash the same bytes.
    assert tag(files={"a.py": b"xy", "b.py": b""}) != tag(files={"a.py": b"x", "b.py": b"y"})


def test_base_key_follows_its_recipe_only() -> None:
    mirrors = ("deb http://deb.example/debian bookworm main",)
    base = image.BaseRecipe(mirrors=mirrors)
    assert base.key() == image.BaseRecipe(mirrors=mirrors).key()
    assert base.key() == image.BaseRecipe(mirrors=mirrors,
                                          packages=tuple(reversed(base.packages))).key()
    assert base.key() != image.BaseRecipe(mirrors=(*mirrors, mirrors[0] + "-updates")).key()
    assert base.key() != image.BaseRecipe(mirrors=mirrors, suite="trixie").key()
    assert base.key() != image.BaseRecipe(mirrors=mirrors,
                                          packages=(*base.packages, "curl")).key()
    argv = base.mmdebstrap_argv(Path("/tmp/base.tar"))
    assert argv[0] == "mmdebstrap" and "--variant=essential" in argv
    assert argv[-2:] == ["/tmp/base.tar", mirrors[0]]
    assert f"--include={','.join(image.BASE_PACKAGES)}" in argv


def test_apt_mirrors_from_both_formats() -> None:
    sources_list = """# a comment
deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main contrib
deb-src http://one.example/debian bookworm main
deb http://one.example/debian bullseye main
deb http://one.example/debian bookworm-backports main  # trailing comment
"""
    deb822 = """Types: deb deb-src
# http://snapshot.example/archive
URIs: http://two.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://two.example/debian-security
Suites: bookworm-security
Components: main non-free-firmware

Types: deb
Enabled: no
URIs: http://off.example/debian
Suites: bookworm
Components: main
"""
    assert image.apt_mirrors(sources_list, [deb822], "bookworm") == (
        "deb http://one.example/debian bookworm main contrib",
        "deb http://one.example/debian bookworm-backports main",
        "deb http://two.example/debian bookworm main",
        "deb http://two.example/debian bookworm-updates main",
        "deb http://two.example/debian-security bookworm-security main non-free-firmware",
    )
    assert image.apt_mirrors("", [], "bookworm") == ()


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://x.example/debian bullseye main\n")
    with pytest.raises(LabError, match="no `deb` entry for suite bookworm"):
        image.read_apt_mirrors(tmp_path)


def test_manylinux_tags_cover_older_glibc() -> None:
    tags = image.manylinux_tags((2, 36), "x86_64")
    assert tags[0] == "manylinux_2_36_x86_64" and tags[-1] == "manylinux_2_5_x86_64"
    assert "manylinux_2_17_x86_64" in tags and len(tags) == 32


def test_prune_keeps_the_newest_tags_and_the_current_one() -> None:
    tags = [(10, "localhost/tortie:a"), (30, "localhost/tortie:c"), (20, "localhost/tortie:b"),
            (40, "localhost/tortie:d")]
    assert image.tags_to_remove(tags, keep="localhost/tortie:d", keep_tags=2) == [
        "localhost/tortie:b", "localhost/tortie:a"]
    # The current one is kept even when it is not among the newest.
    assert image.tags_to_remove(tags, keep="localhost/tortie:a", keep_tags=2) == [
        "localhost/tortie:c", "localhost/tortie:b"]
    assert image.tags_to_remove(tags, keep=None, keep_tags=3) == ["localhost/tortie:a"]
    assert image.tags_to_remove(tags[:1], keep="localhost/tortie:a", keep_tags=2) == []


def test_missing_shim_names_its_build_script(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="scripts/build-shim.sh"):
        image.read_inputs(shim=tmp_path / "tortie-cni-shim")


def test_containers_conf_has_what_podman_needs_here(tmp_path: Path) -> None:
    text = podman.containers_conf()
    parsed = tomllib.loads(text)
    assert parsed["engine"]["cgroup_manager"] == "cgroupfs"
    assert parsed["containers"]["default_ulimits"] == ["nofile=1024:1024", "nproc=1024:1024"]
    assert parsed["engine"]["tmp_dir"] == str(podman.TMP_DIR)
    assert parsed["network"]["network_config_dir"] == str(podman.DEFAULT_NETWORK_DIR)
    network = podman.Network(tmp_path / "net.d", (tmp_path / "bin", Path("/usr/lib/cni")),
                             conf_dir=tmp_path)
    lab = tomllib.loads(podman.containers_conf(network))
    assert lab["network"] == {"network_backend": "cni", "network_config_dir": str(tmp_path / "net.d"),
                              "cni_plugin_dirs": [str(tmp_path / "bin"), "/usr/lib/cni"]}
    assert lab["engine"] == parsed["engine"]  # only the network part varies
    path = podman.write_conf(network)
    assert path.parent == tmp_path and path.read_text() == podman.containers_conf(network)
    assert podman.write_conf(network) == path and (tmp_path / "net.d").is_dir()


def test_podman_argv_uses_the_one_storage() -> None:
    argv = podman.Podman(netns="ttx-node1").argv(["ps"])
    assert argv == ["nsenter", "--net=/run/netns/ttx-node1", "podman",
                    "--root", "/var/lib/tortie/containers", "--runroot",
                    "/run/tortie/containers", "--storage-driver", "overlay", "ps"]
