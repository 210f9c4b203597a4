"""The tortie image, built (or found) through lab.image, and what is inside it.

Builds the image when this tree's is absent (about 60 s with the base, 28 s without:
docs/image.md), then runs each program in a container with no network. The
second `ensure()` must find the image under its content tag and build nothing.
"""

from __future__ import annotations

import struct
import subprocess
import tomllib
from pathlib import Path

import pytest

from lab import image as lab_image
from lab.podman import BUILD_LABEL, Podman
from tests.support import need

pytestmark = [pytest.mark.slow, pytest.mark.root]

PROGRAMS = {
    # command in the image -> what its output must contain
    "tortie-agent --help": "usage",
    "tortie-bgp --help": "usage",
    "CNI_COMMAND=VERSION tortie-cni": '"supportedVersions"',
    "CNI_COMMAND=VERSION tortie-ipam": '"supportedVersions"',
    "tortie-install-cni --help": "usage",
    "tortie-cni-server --help": "--socket",
    "ctl --help": "Usage",
    "exabgp version": "ExaBGP : 5.0.15",
    "ip -V": "iproute2",
    "iptables-nft -V": "(nf_tables)",
    "iptables-legacy -V": "(legacy)",
    "ipset -v": "ipset v",
    "nsenter -V": "util-linux",
    "/usr/lib/cni/portmap --version": "CNI portmap plugin",
    "/usr/lib/cni/host-local --version": "CNI host-local plugin",
}


@pytest.fixture(scope="module")
def built() -> lab_image.ImageResult:
    need("podman", "runc", "git", "mmdebstrap", root=True, root_for="podman's storage")
    if not lab_image.SHIM.is_file():
        pytest.skip(f"{lab_image.SHIM} missing (scripts/build-shim.sh builds it)")
    return lab_image.ensure()


def in_image(ref: str, script: str) -> subprocess.CompletedProcess[str]:
    return Podman().run("run", "--rm", "--network", "none", ref, "sh", "-c", script,
                        check=False)


def test_second_ensure_builds_nothing(built: lab_image.ImageResult) -> None:
    again = lab_image.ensure()
    assert again.ref == built.ref and again.built is False
    assert lab_image.ensure_image() == built.ref
    assert built.ref == f"{lab_image.IMAGE_NAME}:{lab_image.plan().tag}"
    # Nothing dangling is left from the build's stages.
    dangling = Podman().ids("images", "--filter", "dangling=true",
                            "--filter", f"label={BUILD_LABEL}=1")
    assert dangling == []


@pytest.mark.parametrize("command", list(PROGRAMS))
def test_program_runs(built: lab_image.ImageResult, command: str) -> None:
    res = in_image(built.ref, command)
    out = res.stdout + res.stderr
    assert PROGRAMS[command] in out, f"{command} exited {res.returncode}: {out}"
    assert "Traceback" not in out


def test_every_shared_object_finds_its_libraries(built: lab_image.ImageResult) -> None:
    # A manylinux wheel may expect system libraries (grpcio: libstdc++) the base lacks.
    res = in_image(built.ref, "find /opt/tortie /usr/lib/python3* -name '*.so*' -type f "
                              "-exec ldd {} + | grep -B20 'not found' || echo ALL-FOUND")
    assert res.stdout.strip().endswith("ALL-FOUND"), res.stdout


def test_the_shim_is_static(built: lab_image.ImageResult) -> None:
    podman = Podman()
    root = Path(podman.run("image", "mount", built.ref).stdout.strip())
    try:
        shim = root / "opt/tortie/libexec/tortie-cni-shim"
        assert shim.read_bytes() == lab_image.SHIM.read_bytes()
        assert shim.stat().st_mode & 0o777 == 0o755
        assert has_no_interpreter(shim.read_bytes())
    finally:
        podman.run("image", "unmount", built.ref)


def has_no_interpreter(elf: bytes) -> bool:
    """An ELF64 executable without a PT_INTERP program header is statically linked."""
    assert elf[:4] == b"\x7fELF" and elf[4] == 2, "not an ELF64 file"
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 not in types  # PT_INTERP


def test_image_is_lean(built: lab_image.ImageResult) -> None:
    res = in_image(built.ref, """
        for tool in gcc cc c++ make pip pip3 apt-get; do command -v $tool; done
        ls /opt/tortie/bin | grep -x 'pip.*'
        find /var/lib/apt/lists /var/cache/apt -type f ! -name lock
        find / -xdev \\( -path '*/.cache/pip' -o -name '*.deb' -o -path /tmp/wheels \\) -print
        find /opt/tortie -name '*.pyc' -path '*/site-packages/pip/*'
        find /usr/share/man /usr/share/locale -type f
        echo END""")
    assert res.stdout.strip() == "END", res.stdout
    size = Podman().run("image", "inspect", "--format", "{{.Size}}", built.ref).stdout
    # A ceiling that catches a regression (a compiler, caches, a second copy of the venv),
    # not a target: 256 MB when set, of which the base is 126 MB and the kubernetes client
    # 59 MB (docs/image.md).
    assert int(size) < 280_000_000, f"{built.ref} is {int(size) / 1e6:.0f} MB"


def test_pyc_is_precompiled_and_trusted(built: lab_image.ImageResult) -> None:
    # Every module of tortie has its .pyc in the image (unchecked-hash: no stat of the source).
    res = in_image(built.ref, "cd /opt/tortie/lib/python3.11/site-packages && "
                              "for f in agent/main.py cni/plugin.py datastore/etcd.py; do "
                              "ls ${f%/*}/__pycache__/$(basename $f .py).cpython-311.pyc; done")
    assert res.returncode == 0 and res.stdout.count(".pyc") == 3, res.stdout + res.stderr
    flags = in_image(built.ref, "head -c 8 /opt/tortie/lib/python3.11/site-packages/agent/"
                                "__pycache__/main.cpython-311.pyc | od -An -tx1 -j4")
    assert flags.stdout.split()[0] == "01", flags.stdout  # bit 0: hash-based, bit 1 off: unchecked


def test_wheel_inputs_are_the_packages_and_project_files() -> None:
    need("git")
    paths = lab_image.wheel_input_paths()
    project = tomllib.loads((lab_image.REPO / "pyproject.toml").read_text())
    roots = {p.rstrip("*").rstrip(".")
             for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {p.split("/")[0] for p in paths} == roots | {"pyproject.toml", "README.md"}
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    tracked = subprocess.run(["git", "-C", str(lab_image.REPO), "ls-files", "--", "cni"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert tracked and set(tracked) <= set(paths)
