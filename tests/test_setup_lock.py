"""setup.sh installs the exact versions of requirements.lock: the lock must pin every dependency of pyproject.toml
(all extras), and each pin must satisfy what pyproject asks for, so that a stale lock fails here, not on a user's
machine.  Remake it with the command at the top of setup.sh."""
from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from playbooks.settings.defaults import REPO


def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line.split(";", 1)[0].strip())
            (spec,) = req.specifier
            assert spec.operator == "==", line
            found[canonicalize_name(req.name)] = spec.version
    return found


def test_every_dependency_is_pinned_at_a_version_pyproject_accepts():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        wanted += [Requirement(r) for r in extra if not r.startswith("fleetbook[")]
    locked = pins()
    assert len(locked) > len(wanted)  # the lock holds the whole tree, not only the direct dependencies
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in requirements.lock: remake it (see setup.sh)"
        assert req.specifier.contains(locked[name], prereleases=True), (req, locked[name])

