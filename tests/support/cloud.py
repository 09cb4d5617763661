"""Fixtures for the cloud provider tests: a moto server and the GCE fake on 127.0.0.1, a real sshd for the fake's
VMs, and Invoke contexts whose settings point at them.  Nothing here reads ~/.aws or application-default
credentials: the environment is replaced with fake credentials and endpoints.

tests/conftest.py makes the fixtures available to every test module; import the helpers by name.
"""
from __future__ import annotations

import copy
import getpass
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from invoke import Config, Context

from playbooks.ssh import keys as sshkeys
from playbooks.settings.cloud import CLOUD_DEFAULTS
from playbooks.settings.defaults import DEFAULTS

from tests.support.fake_ec2_fleet import FakeEC2Fleet  # noqa: E402
from tests.support.fake_gce import FakeGCE  # noqa: E402

FLEET = "demo"
SSHD = "/usr/sbin/sshd"

__all__ = ["FLEET", "free_port", "make_context", "gce", "gcp_ctx", "fleet_sshd", "moto_endpoint", "aws_env",
           "aws_ctx", "moto_ami", "isolated_env", "head_root", "ec2_fleet", "aws_fleet_ctx", "run_fleet_sshd"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_context(overrides: dict) -> Context:
    """An Invoke context with the project's defaults, the cloud defaults and these overrides."""
    defaults = Config.global_defaults()
    defaults.update(copy.deepcopy(DEFAULTS))
    for key, sub in copy.deepcopy(CLOUD_DEFAULTS).items():
        defaults.setdefault(key, {}).update(sub)
    return Context(config=Config(defaults=defaults, overrides=overrides))


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No real cloud credentials or config files can be read."""
    for var in list(os.environ):
        if var.startswith(("AWS_", "GOOGLE_", "CLOUDSDK_", "INVOKE_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-adc.json"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return monkeypatch


# --- GCE fake ------------------------------------------------------------------------------------------

@pytest.fixture
def gce():
    fake = FakeGCE("fake-project").start()
    yield fake
    fake.stop()


def run_fleet_sshd(tmp_path, addresses=("127.0.0.1",), extra=(), path: str = ""):
    """A real sshd on a free port of each loopback address in ``addresses``, accepting the fleet's key, its
    sessions' HOME ``<tmp>/sshd/home`` (and PATH ``path`` first, when given); yields (port, host key line, sshd
    folder)."""
    from playbooks.ssh.ports import banner
    from playbooks.ssh.sshd import sshd_config
    state = tmp_path / "state"
    pub = sshkeys.keypair(state / FLEET / "id_ed25519", f"fleetbook-{FLEET}")
    d = tmp_path / "sshd"
    d.mkdir(exist_ok=True)
    (d / "authorized_keys").write_text(pub + "\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_ed25519")], check=True)
    port = free_port()
    cfg = d / "sshd_config"
    env = f"SetEnv HOME={d / 'home'}" + (f" PATH={path}:/usr/local/bin:/usr/bin:/bin" if path else "")
    cfg.write_text(sshd_config(listen=addresses[0], port=port, host_key=d / "host_ed25519", pid_file=d / "sshd.pid",
                               authorized=d / "authorized_keys", user=getpass.getuser(),
                               extra=[*(f"ListenAddress {a}:{port}" for a in addresses[1:]), *extra, env,
                                      "Subsystem sftp internal-sftp"]))
    (d / "home").mkdir(mode=0o700)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True) if os.geteuid() == 0 else None
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    for _ in range(100):
        if all(banner(a, port, 0.5) for a in addresses):
            break
        time.sleep(0.05)
    host_key = " ".join((d / "host_ed25519.pub").read_text().split()[:2])
    try:
        yield port, host_key, d
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def fleet_sshd(tmp_path):
    """A real sshd on 127.0.0.1:<free port> accepting the fleet's key; yields (port, host key line, authorized
    keys file: append another fleet's public key to let it in)."""
    for port, host_key, d in run_fleet_sshd(tmp_path):
        yield port, host_key, d / "authorized_keys"


@pytest.fixture
def gcp_ctx(gce, isolated_env, tmp_path):
    return make_context({
        "fleet": {"state_dir": str(tmp_path / "state"), "ssh_timeout": 5.0},
        "gcp": {"endpoint": gce.endpoint, "project": "fake-project", "zone": "us-central1-a",
                "ssh_source_ranges": "127.0.0.1/32", "user": getpass.getuser(), "operation_timeout": 20.0},
    })


@pytest.fixture
def head_root(tmp_path):
    """A shared root the head sshd can chroot into as root (below root-owned folders), else under tmp_path."""
    import shutil
    import tempfile
    if os.geteuid() == 0:
        base = Path("/var/lib/fleetbook-tests")
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="cloud-", dir=base))
    else:
        root = tmp_path / "data"
        root.mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


# --- moto --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_endpoint():
    """One moto server per test module (reset before every test by ``aws_env``)."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("moto_server exited")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def aws_env(moto_endpoint, isolated_env):
    req = urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).close()
    isolated_env.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    isolated_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    isolated_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    isolated_env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3
    isolated_env.setattr(boto3, "DEFAULT_SESSION", None)
    return moto_endpoint


@pytest.fixture(scope="module")
def moto_ami(moto_endpoint):
    """An AMI id moto always has (its built-in images survive a reset)."""
    import boto3
    ec2 = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "ec2", region_name="us-east-1", endpoint_url=moto_endpoint)
    return ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "architecture", "Values": ["x86_64"]}])[
        "Images"][0]["ImageId"]


@pytest.fixture
def aws_ctx(aws_env, moto_ami, tmp_path):
    ami = moto_ami
    return make_context({
        "fleet": {"state_dir": str(tmp_path / "state"), "ssh_timeout": 5.0},
        "aws": {"region": "us-east-1", "ami": ami, "ssh_cidr": "198.51.100.7/32", "waiter_timeout": 20.0},
    })


@pytest.fixture(scope="module")
def ec2_fleet(moto_endpoint):
    """The CreateFleet layer over the module's moto server (tests/support/fake_ec2_fleet.py: what moto lacks, and why)."""
    fake = FakeEC2Fleet(moto_endpoint).start()
    yield fake
    fake.stop()


@pytest.fixture
def aws_fleet_ctx(aws_ctx, ec2_fleet, isolated_env):
    """aws_ctx through the CreateFleet layer, allowed three subnets (us-east-1a, b, c) and two instance types."""
    import boto3
    ec2_fleet.reset()
    isolated_env.setenv("AWS_ENDPOINT_URL", ec2_fleet.endpoint)
    isolated_env.setattr(boto3, "DEFAULT_SESSION", None)
    subnets = sorted(boto3.client("ec2", region_name="us-east-1").describe_subnets(
        Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"], key=lambda s: s["AvailabilityZone"])
    ec2_fleet.calls.clear()
    aws_ctx.config.aws.subnets = ",".join(s["SubnetId"] for s in subnets[:3])   # as from INVOKE_AWS_SUBNETS
    aws_ctx.config.aws.instance_types = ["c6i.large", "m6i.large"]              # as from invoke.yaml
    return aws_ctx
