"""Bake a cloud image with python, sshfs and the workloads' dependencies, so nodes boot ready to work.

The image is keyed by a hash of its setup steps (``image.steps``) and its base image: a bake whose hash already
has an image is skipped, and ``fleet.create`` on that cloud uses the newest baked image (``image.use_baked``).
"""
from __future__ import annotations

import hashlib
import json
import time

from invoke import task
from invoke.exceptions import Exit

from playbooks import providers
from playbooks.providers import FleetSpec, Node, NodesNotReady
from playbooks.settings import setting
from playbooks.settings.errors import user_errors


def steps_of(c) -> list[str]:
    """``image.steps``: a list (invoke.yaml) or one string with a step per line (environment)."""
    steps = c.config.image.steps
    if isinstance(steps, str):
        steps = steps.splitlines()
    steps = [str(s).strip() for s in steps if str(s).strip()]
    if not steps:
        raise Exit("image.steps is empty: list the shell commands that set up the image in invoke.yaml")
    return steps


def steps_hash(steps: list[str], base: str, provider: str) -> str:
    """16 hex digits naming what the image holds (a valid GCP label value and AWS tag)."""
    blob = json.dumps({"provider": provider, "base": base, "steps": steps}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_steps(c, fleet: str, node: Node, steps: list[str], timeout: float) -> None:
    """Run each step on the template over SSH (pinned host key); stop at the first failure."""
    from playbooks.ssh.fanout import connect, run_checked
    conn = connect(c, fleet, node)
    try:
        for i, step in enumerate(steps, 1):
            print(f"bake step {i}/{len(steps)}: {step}")
            try:
                run_checked(conn, step, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - one line for the user, template cleaned up by caller
                raise Exit(f"bake step {i} failed on {node.name}: {exc}; fix image.steps and bake again") from None
    finally:
        conn.close()


def cloud_provider(c, provider: str):
    name = provider or c.config.image.provider or c.config.fleet.provider
    if name not in ("gcp", "aws"):
        raise Exit(f"image.bake bakes cloud images: pass --provider gcp or --provider aws (not {name!r})")
    return name, providers.get(name)


@task(help={
    "provider": "gcp or aws (default: image.provider, else fleet.provider)",
    "force": "bake again even when an image for these steps exists",
    "dry_run": "print the hash, the steps and the template request; create nothing",
    "keep": "keep the template instance after baking (to debug a step); delete it with fleet.down",
})
@user_errors
def bake(c, provider="", force=False, dry_run=False, keep=False):
    """Bake an image from the base image and image.steps (skipped when one with the same steps exists)."""
    name, prov = cloud_provider(c, provider)
    steps = steps_of(c)
    base = prov.base_image(c)
    digest = steps_hash(steps, base, name)
    found = prov.find_image(c, digest)
    if found and not force:
        print(f"image {found} already holds these steps (hash {digest}): nothing to bake")
        return found
    template = f"bake-{digest[:8]}"
    timeout = setting(c, "image.timeout")
    spec = FleetSpec(name=template, count=1, provider=name, spot=False, ttl_hours=max(1.0, timeout / 3600 + 0.5),
                     min_count=1, dry_run=dry_run)
    image_name = f"{c.config.image.family}-{digest}-{int(time.time())}"
    print(f"baking {image_name} on {name} from {base} ({len(steps)} steps, hash {digest})")
    if dry_run:
        prov.create(c, spec, image=base)
        for i, step in enumerate(steps, 1):
            print(f"[dry run] would run step {i}: {step}")
        print(f"[dry run] would stop {template}, create image {image_name}, delete {template}")
        return None
    start = time.monotonic()
    try:
        prov.create(c, spec, image=base)
        try:
            node = prov.wait_ready(c, template, setting(c, "fleet.ready_timeout"))[0]
        except NodesNotReady as exc:
            raise Exit(f"bake template {template}: {exc}; the template is deleted, try again") from None
        run_steps(c, template, node, steps, timeout)
        image = prov.capture_image(c, node, digest, image_name)
    finally:
        if keep:
            print(f"kept template {template}: invoke fleet.down --provider {name} --name {template}")
        else:
            prov.terminate(c, template)
    print(f"baked image {image} in {time.monotonic() - start:.0f} s; fleet.create on {name} now uses it")
    return image
