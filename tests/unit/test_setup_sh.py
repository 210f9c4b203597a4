"""scripts/setup.sh never starts, stops or restarts a service the machine already had.

The script runs against fake dpkg-query, apt-get, systemctl and id on PATH, in a copy
of the repository's layout whose .venv is already up to date, so nothing is installed
and no root is needed. The fake apt-get "installs" the missing packages and starts
their services unless the policy-rc.d in force says 101, as invoke-rc.d does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"

# package -> the unit it ships (the three the old set-up stopped unconditionally)
UNITS = {"etcd-server": "etcd.service", "frr": "frr.service", "bird2": "bird.service"}

FAKES = {
    "id": '#!/bin/sh\necho 0\n',
    "dpkg-query": r'''#!/bin/bash
if [[ $1 == -W ]]; then
    pkg=${@: -1}
    if grep -qxF "$pkg" "$FAKE/missing" && ! grep -qxF "$pkg" "$FAKE/installed"; then exit 1; fi
    printf 'install ok installed'
    exit 0
fi
shift  # -L
for pkg in "$@"; do
    case $pkg in
        etcd-server) echo /lib/systemd/system/etcd.service ;;
        frr) echo /lib/systemd/system/frr.service ;;
        bird2) echo /lib/systemd/system/bird.service ;;
    esac
    echo "/usr/share/doc/$pkg"
done
''',
    "apt-get": r'''#!/bin/bash
echo "apt-get $*" >> "$FAKE/log"
[[ $1 == install ]] || exit 0
[[ -e $SETUP_POLICY_RC_D ]] && echo "policy during install" >> "$FAKE/log"
for pkg in "$@"; do
    [[ $pkg == -* || $pkg == install ]] && continue
    echo "$pkg" >> "$FAKE/installed"
    case $pkg in
        etcd-server) unit=etcd.service ;; frr) unit=frr.service ;; bird2) unit=bird.service ;;
        *) continue ;;
    esac
    if [[ -x $SETUP_POLICY_RC_D ]]; then
        rc=0; "$SETUP_POLICY_RC_D" "$unit" start || rc=$?
        [[ $rc == 101 ]] && continue
    fi
    grep -qxF "$unit" "$FAKE/active" || echo "$unit" >> "$FAKE/active"
done
''',
    "systemctl": r'''#!/bin/bash
echo "systemctl $*" >> "$FAKE/log"
case $1 in
    list-units) while read -r u; do echo "$u loaded active running fake"; done < "$FAKE/active" ;;
    stop) grep -vxF "$2" "$FAKE/active" > "$FAKE/active.new" || true
          mv "$FAKE/active.new" "$FAKE/active" ;;
esac
''',
}


class Machine:
    def __init__(self, root: Path, *, missing: list[str], active: list[str],
                 systemd: bool, own_policy: str | None) -> None:
        self.root = root
        self.repo = root / "repo"
        self.fake = root / "fake"
        self.policy = root / "policy-rc.d"
        (self.repo / "scripts").mkdir(parents=True)
        shutil.copy(SETUP, self.repo / "scripts" / "setup.sh")
        # The shim's build (a C compiler run) is not this test's subject: a stub that
        # records that setup ran it.
        build_shim = self.repo / "scripts" / "build-shim.sh"
        build_shim.write_text('#!/bin/sh\necho build-shim >> "$FAKE/built"\n')
        build_shim.chmod(0o755)
        pyproject = self.repo / "pyproject.toml"
        pyproject.write_text("[project]\nname = 'x'\n")
        venv = self.repo / ".venv"
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text("#!/bin/sh\n")
        (venv / "bin" / "python").chmod(0o755)
        (venv / ".tortie-installed").write_text(
            hashlib.sha256(pyproject.read_bytes()).hexdigest() + "\n")
        (self.fake / "bin").mkdir(parents=True)
        for name, text in FAKES.items():
            path = self.fake / "bin" / name
            path.write_text(text)
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        (self.fake / "missing").write_text("".join(f"{p}\n" for p in missing))
        (self.fake / "installed").write_text("")
        (self.fake / "active").write_text("".join(f"{u}\n" for u in active))
        (self.fake / "log").write_text("")
        self.systemd_dir = root / "run-systemd-system"
        if systemd:
            self.systemd_dir.mkdir()
        if own_policy is not None:
            self.policy.write_text(own_policy)
            self.policy.chmod(0o755)

    def run(self) -> subprocess.CompletedProcess:
        env = dict(os.environ, FAKE=str(self.fake),
                   PATH=f"{self.fake / 'bin'}:{os.environ['PATH']}",
                   SETUP_POLICY_RC_D=str(self.policy),
                   SETUP_SYSTEMD_RUN_DIR=str(self.systemd_dir))
        return subprocess.run(["bash", str(self.repo / "scripts" / "setup.sh")], env=env,
                              capture_output=True, text=True, timeout=60)

    @property
    def log(self) -> list[str]:
        return (self.fake / "log").read_text().splitlines()

    @property
    def active(self) -> list[str]:
        return (self.fake / "active").read_text().split()


@pytest.fixture
def machine(tmp_path):
    return lambda **kw: Machine(tmp_path, **kw)


def test_nothing_missing_touches_nothing(machine):
    m = machine(missing=[], active=["etcd.service", "frr.service"], systemd=True, own_policy=None)
    res = m.run()
    assert res.returncode == 0, res.stderr
    assert m.log == []  # neither apt-get nor systemctl ran
    assert (m.fake / "built").read_text() == "build-shim\n"  # the shim is always (re)built
    assert m.active == ["etcd.service", "frr.service"]
    assert not m.policy.exists()
    assert res.stdout == ""


def test_new_services_kept_from_starting_and_running_ones_untouched(machine):
    # The machine runs its own etcd (a unit of its own; the package is not installed).
    m = machine(missing=["etcd-server", "frr", "curl"], active=["etcd.service"],
                systemd=True, own_policy=None)
    res = m.run()
    assert res.returncode == 0, res.stderr
    assert "policy during install" in m.log
    assert not m.policy.exists()  # ours, removed after the install
    assert m.active == ["etcd.service"]  # frr never started; etcd still running
    assert not [line for line in m.log if line.startswith("systemctl stop")]
    assert ("kept these services of packages this run installed from starting: "
            "etcd.service frr.service") in res.stdout


def test_own_permissive_policy_kept_and_only_new_services_stopped(machine):
    allow = "#!/bin/sh\nexit 0\n"
    m = machine(missing=["etcd-server", "frr"], active=["etcd.service"], systemd=True,
                own_policy=allow)
    res = m.run()
    assert res.returncode == 0, res.stderr
    assert m.policy.read_text() == allow  # the machine's policy is left as it was
    assert [line for line in m.log if line.startswith("systemctl stop")] == [
        "systemctl stop frr.service"]
    assert m.active == ["etcd.service"]
    assert "stopping frr.service (installed and started by this run)" in res.stdout


def test_without_systemd_nothing_is_stopped(machine):
    m = machine(missing=["bird2"], active=[], systemd=False, own_policy=None)
    res = m.run()
    assert res.returncode == 0, res.stderr
    assert not [line for line in m.log if line.startswith("systemctl")]
    assert not m.policy.exists()
    assert "bird.service" in res.stdout
