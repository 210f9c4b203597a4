"""The tortie container image: its inputs, its content tag, building it, pruning old ones.

Owns: `localhost/tortie:<tag>` and its base `localhost/tortie-base:<key>` in tortie's
podman storage (lab.podman), the base tarballs in /var/lib/tortie/image-cache, and
the rule that says when to build.

Invariants:

* The tag is the first 12 hex digits of a sha256 over exactly the build inputs
  (`content_tag`, pure): the Containerfile, the base recipe (suite, packages,
  mirrors, dpkg path filters), every file that goes into the wheel (git's tracked
  and untracked-but-not-ignored files of the packages pyproject.toml names, plus
  pyproject.toml and README.md) and the shim binary. Same inputs, same tag; so an
  image that exists under its tag is never built again.
* The wheel is built from a copy of exactly those files, so what is hashed is what
  is shipped (a stray build/ or egg-info in the checkout cannot leak in).
* The base is keyed the same way by its recipe alone (`BaseRecipe.key`): its tarball
  is made once by mmdebstrap and imported once.
* One build at a time per machine (a file lock): a second caller waits and then
  finds the image.
* Every image this module builds carries the label tortie.build=1 (the Containerfile
  labels each stage); pruning removes only such images.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import click

from lab.errors import CommandFailed, LabError
from lab.podman import BUILD_LABEL, Podman

REPO = Path(__file__).resolve().parent.parent
CONTAINERFILE = REPO / "images" / "tortie" / "Containerfile"
SHIM = REPO / "build" / "tortie-cni-shim"
CACHE_DIR = Path("/var/lib/tortie/image-cache")  # base tarballs, and the build lock
IMAGE_NAME = "localhost/tortie"
BASE_NAME = "localhost/tortie-base"
KEEP_TAGS = 2  # tortie tags kept by prune, the current one included

SUITE = "bookworm"
# The base's python3 and glibc (bookworm's): the dependencies' wheels are chosen for them.
IMAGE_PYTHON = "3.11"
IMAGE_GLIBC = (2, 36)
# What the programs in the image run: python3 (+ venv, to make /opt/tortie), ip,
# iptables (nft and legacy), ipset, nsenter, and the reference CNI plugins that chain
# after tortie; libstdc++6 for grpcio's manylinux wheel (manylinux wheels may expect the
# system's libstdc++; the essential variant has none). usr-is-merged comes from
# mmdebstrap's merged-usr hook (the default pulls usrmerge and with it perl, 55 MB).
BASE_PACKAGES = ("containernetworking-plugins", "iproute2", "ipset", "iptables", "libstdc++6",
                 "python3", "python3-venv", "util-linux")
# dpkg path filters: no manuals, translations or docs (copyright files stay), and only
# the four reference plugins the chart chains (the other fourteen are 40 MB).
DPKG_PATH_FILTERS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/lib/cni/*",
    "path-include=/usr/lib/cni/bandwidth",
    "path-include=/usr/lib/cni/host-local",
    "path-include=/usr/lib/cni/loopback",
    "path-include=/usr/lib/cni/portmap",
)
MERGED_USR_HOOK = "/usr/share/mmdebstrap/hooks/merged-usr"


# -- the inputs (pure) ------------------------------------------------------------------


def apt_mirrors(sources_list: str, deb822_sources: Iterable[str], suite: str) -> tuple[str, ...]:
    """One-line `deb URI SUITE COMPONENTS` entries for `suite` and its `suite-*` suites.

    Reads apt's one-line format (/etc/apt/sources.list) and deb822 (*.sources), keeps
    `deb` entries only (no deb-src, no disabled stanzas), drops options in brackets.
    """
    wanted = re.compile(rf"^{re.escape(suite)}(-[a-z]+)?$")
    entries: list[str] = []
    for line in sources_list.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()  # no [options]
        if len(words) >= 4 and words[0] == "deb" and wanted.match(words[2]):
            entries.append(" ".join(words))
    for text in deb822_sources:
        for stanza in re.split(r"\n\s*\n", text):
            fields = _deb822_fields(stanza)
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                for s in fields.get("suites", "").split():
                    if wanted.match(s):
                        entries.append(f"deb {uri} {s} {fields.get('components', 'main')}")
    return tuple(dict.fromkeys(entries))


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0] in " \t" and key:  # a continuation line
            fields[key] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            fields[key] = value.strip()
    return fields


@dataclass(frozen=True)
class BaseRecipe:
    """What mmdebstrap makes the base from; its key names the tarball and the base tag."""

    mirrors: tuple[str, ...]
    suite: str = SUITE
    packages: tuple[str, ...] = BASE_PACKAGES
    dpkg_filters: tuple[str, ...] = DPKG_PATH_FILTERS

    def key(self) -> str:
        doc = {"suite": self.suite, "packages": sorted(self.packages),
               "mirrors": list(self.mirrors), "dpkg": list(self.dpkg_filters),
               "variant": "essential", "hooks": ["merged-usr"]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]

    def mmdebstrap_argv(self, tarball: Path) -> list[str]:
        return ["mmdebstrap", "--quiet", "--variant=essential", f"--hook-dir={MERGED_USR_HOOK}",
                *(f"--dpkgopt={opt}" for opt in self.dpkg_filters),
                f"--include={','.join(self.packages)}", self.suite, str(tarball), *self.mirrors]


def content_tag(containerfile: bytes, base_key: str, wheel_files: Mapping[str, bytes],
                shim: bytes) -> str:
    """The image tag: 12 hex digits of a sha256 over every build input (pure).

    Each part is framed by its name and length, so no two different sets of inputs
    can produce the same byte stream.
    """
    digest = hashlib.sha256()

    def part(name: str, data: bytes) -> None:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)

    part("Containerfile", containerfile)
    part("base", base_key.encode())
    for path in sorted(wheel_files):
        part(f"wheel/{path}", wheel_files[path])
    part("shim", shim)
    return digest.hexdigest()[:12]


def manylinux_tags(glibc: tuple[int, int], arch: str) -> list[str]:
    """Every manylinux platform tag a system with `glibc` runs, newest first (PEP 600).

    pip's --platform matches only the tags it is given, not older compatible ones.
    """
    major, newest = glibc
    return [f"manylinux_{major}_{minor}_{arch}" for minor in range(newest, 4, -1)]


# -- reading the inputs ------------------------------------------------------------------


def read_apt_mirrors(etc_apt: Path = Path("/etc/apt"), suite: str = SUITE) -> tuple[str, ...]:
    sources_list = etc_apt / "sources.list"
    deb822 = sorted((etc_apt / "sources.list.d").glob("*.sources"))
    one_line = [sources_list, *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    mirrors = apt_mirrors("\n".join(p.read_text() for p in one_line if p.exists()),
                          (p.read_text() for p in deb822), suite)
    if not mirrors:
        raise LabError(f"no `deb` entry for suite {suite} in {etc_apt}/sources.list or "
                       f"{etc_apt}/sources.list.d/: the image's base needs a Debian mirror")
    return mirrors


def wheel_input_paths(repo: Path = REPO) -> list[str]:
    """The files that go into tortie's wheel, relative to `repo`, sorted."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    dirs = sorted({p.rstrip("*").rstrip(".") for p in patterns})
    try:
        listed = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "--cached", "--others", "--exclude-standard",
             "-z", "--", *dirs], capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as err:
        raise LabError(f"cannot list the wheel's files with git in {repo}: {err}") from err
    files = {p for p in listed.split("\0") if p and (repo / p).is_file()}
    return sorted(files | {"pyproject.toml", project["project"].get("readme", "README.md")})


def read_inputs(repo: Path = REPO, shim: Path = SHIM) -> tuple[dict[str, bytes], bytes]:
    if not shim.is_file():
        raise LabError(f"the CNI shim {shim} is missing: build it with scripts/build-shim.sh "
                       "(scripts/setup.sh does) before building the image")
    files = {p: (repo / p).read_bytes() for p in wheel_input_paths(repo)}
    return files, shim.read_bytes()


# -- building ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageResult:
    ref: str
    built: bool  # False: the image already existed under its tag
    base_built: bool = False
    seconds: float = 0.0
    pruned: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Plan:
    """The references an image build would make, from the inputs as they are now."""

    recipe: BaseRecipe
    tag: str

    @property
    def base_ref(self) -> str:
        return f"{BASE_NAME}:{self.recipe.key()}"

    @property
    def ref(self) -> str:
        return f"{IMAGE_NAME}:{self.tag}"


def plan(repo: Path = REPO, shim: Path = SHIM) -> Plan:
    recipe = BaseRecipe(mirrors=read_apt_mirrors())
    files, shim_bytes = read_inputs(repo, shim)
    containerfile = (repo / CONTAINERFILE.relative_to(REPO)).read_bytes()
    return Plan(recipe, content_tag(containerfile, recipe.key(), files, shim_bytes))


def ensure(rebuild: bool = False, repo: Path = REPO, shim: Path = SHIM) -> ImageResult:
    """The image for the tree as it is now, built only if absent (or if `rebuild`)."""
    started = time.monotonic()
    podman = Podman()
    p = plan(repo, shim)
    # Look before taking the lock, so finding an image never waits for another
    # checkout's build; look again under it, as that build may have been this one.
    if not rebuild and _exists(podman, p.ref):
        return ImageResult(p.ref, built=False, seconds=time.monotonic() - started)
    with _build_lock():
        if not rebuild and _exists(podman, p.ref):
            return ImageResult(p.ref, built=False, seconds=time.monotonic() - started)
        base_built = _ensure_base(podman, p)
        _build(podman, p, repo, shim)
        pruned = prune(keep=p.ref)
    return ImageResult(p.ref, built=True, base_built=base_built,
                       seconds=time.monotonic() - started, pruned=pruned)


def ensure_image() -> str:
    """`localhost/tortie:<tag>` for this tree, building it only if it is absent."""
    return ensure().ref


def _exists(podman: Podman, ref: str) -> bool:
    return podman.run("image", "exists", ref, check=False).returncode == 0


@contextmanager
def _build_lock() -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _ensure_base(podman: Podman, p: Plan) -> bool:
    if _exists(podman, p.base_ref):
        return False
    tarball = CACHE_DIR / f"base-{p.recipe.key()}.tar"
    if not tarball.exists():
        if not shutil.which("mmdebstrap"):
            raise LabError("mmdebstrap not installed (apt package mmdebstrap; "
                           "scripts/setup.sh installs it): it makes the image's base")
        partial = tarball.with_suffix(".partial.tar")
        _run(p.recipe.mmdebstrap_argv(partial), timeout=900)
        partial.replace(tarball)
    podman.run("import", "--change", f"LABEL {BUILD_LABEL}=base", str(tarball), p.base_ref,
               timeout=600)
    for old in CACHE_DIR.glob("base-*.tar"):  # one recipe at a time: older tarballs are dead
        if old != tarball:
            old.unlink()
    return True


def _build(podman: Podman, p: Plan, repo: Path, shim: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="tortie-image-") as tmp:
        context, src = Path(tmp) / "context", Path(tmp) / "src"
        wheels = context / "wheels"
        for rel in wheel_input_paths(repo):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, src / rel)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        _run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(src)], timeout=600)
        # The dependencies' wheels come through this machine's pip and its configuration
        # (index, proxy, certificates), for the image's Python and platform: pip inside
        # the build would know none of that, and the build needs no network.
        (tortie_wheel,) = wheels.glob("tortie-*.whl")
        _run([*pip, "download", "--only-binary", ":all:", "--dest", str(wheels),
              "--python-version", IMAGE_PYTHON, "--implementation", "cp",
              *(f"--platform={tag}" for tag in manylinux_tags(IMAGE_GLIBC, platform.machine())),
              str(tortie_wheel)], timeout=900)
        shutil.copy2(repo / CONTAINERFILE.relative_to(REPO), context / "Containerfile")
        shutil.copy2(shim, context / "tortie-cni-shim")
        # --layers=false: the content tag is the cache; intermediate layers would only
        # be leftovers to prune.
        podman.run("build", "--pull=never", "--layers=false", "--network", "none",
                   "--build-arg", f"BASE={p.base_ref}", "--tag", p.ref,
                   "--file", str(context / "Containerfile"), str(context), timeout=1800)


def _run(argv: Sequence[str], timeout: float) -> None:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise CommandFailed(list(argv), res.returncode, res.stdout, res.stderr)


# -- pruning ----------------------------------------------------------------------------


def tags_to_remove(tags: Sequence[tuple[int, str]], keep: str | None,
                   keep_tags: int) -> list[str]:
    """Of (created, name) pairs, the names beyond the newest `keep_tags`, `keep` kept (pure)."""
    ranked = [name for _, name in sorted(tags, reverse=True) if name != keep]
    return ranked[max(keep_tags - (1 if keep else 0), 0):]


def prune(keep: str | None = None, keep_tags: int = KEEP_TAGS) -> tuple[str, ...]:
    """Remove what image builds left; return what was removed.

    That is: dangling images labelled tortie.build=1 (stages, untagged older builds),
    tortie tags beyond the newest `keep_tags` (`keep` always among them), and bases
    no image is built on any more. podman refuses to remove an image a container
    uses, or a base an image still stands on: those stay for a later prune.
    """
    podman = Podman()
    removed = prune_dangling()
    for name in tags_to_remove(_tags(podman, IMAGE_NAME), keep, keep_tags):
        if podman.run("rmi", name, check=False).returncode == 0:
            removed.append(name)
    current_base = f"{BASE_NAME}:{BaseRecipe(mirrors=read_apt_mirrors()).key()}"
    for _, name in _tags(podman, BASE_NAME):
        if name != current_base and podman.run("rmi", name, check=False).returncode == 0:
            removed.append(name)
    return tuple(removed)


def prune_dangling() -> list[str]:
    """Remove the dangling images tortie's builds left (build stages, untagged older
    builds: all labelled tortie.build=1); their IDs. Tagged images stay."""
    return Podman().run("image", "prune", "--force", "--filter", f"label={BUILD_LABEL}=1"
                        ).stdout.split()


def _tags(podman: Podman, repository: str) -> list[tuple[int, str]]:
    listed = json.loads(podman.run("images", "--format", "json", "--filter",
                                   f"reference={repository}").stdout or "[]")
    return [(int(img.get("Created", 0)), name) for img in listed
            for name in img.get("Names") or [] if name.startswith(f"{repository}:")]


@click.command()
@click.option("--print-ref", is_flag=True,
              help="Print only the reference the tree's image has, without building.")
@click.option("--rebuild", is_flag=True, help="Build even if the image exists.")
def main(print_ref: bool, rebuild: bool) -> None:
    """Build tortie's image if this tree's is absent; print its reference."""
    try:
        if print_ref:
            click.echo(plan().ref)
            return
        result = ensure(rebuild=rebuild)
    except LabError as err:
        raise click.ClickException(str(err)) from err
    what = "built" if result.built else "found"
    click.echo(f"lab.image: {what} {result.ref} in {result.seconds:.1f}s", err=True)
    click.echo(result.ref)


if __name__ == "__main__":
    main()
