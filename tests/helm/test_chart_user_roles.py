"""The chart's ClusterRoles for people (rbac.aggregateToDefaultRoles) and the webhook Secret that
outlives an uninstall, on the testbed's API server.

Aggregation is the kube-controller-manager's clusterrole-aggregation controller: it copies the
rules of every ClusterRole labelled aggregate-to-view/edit/admin into the built-in `view`, `edit`
and `admin` roles. The session's control plane does not run that controller (its list is what
Jobs need), so the test that relies on it starts a second kube-controller-manager, from the same
testbed binary, running that one controller only, for as long as the test lasts.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbtrain_dev.testbed import ControlPlane

from .helpers import Releases, can_i

pytestmark = pytest.mark.testbed

# (user-facing role, verb, resource, allowed). Status writes stay the operator's: the rendered
# rules say so (test_chart_conventions.py); `kubectl auth can-i` reads "x/status" as an object name.
ROLE_MATRIX = [
    *(("view", verb, "modelruns.lbtrain.io", True) for verb in ("get", "list", "watch")),
    *(("view", verb, "trainingtemplates.lbtrain.io", True) for verb in ("get", "list", "watch")),
    ("view", "create", "modelruns.lbtrain.io", False),
    ("view", "delete", "modelruns.lbtrain.io", False),
    ("view", "patch", "trainingtemplates.lbtrain.io", False),
    *(
        ("edit", verb, "modelruns.lbtrain.io", True)
        for verb in ("get", "list", "create", "update", "patch", "delete", "deletecollection")
    ),
    ("edit", "list", "trainingtemplates.lbtrain.io", True),
    ("edit", "create", "trainingtemplates.lbtrain.io", False),
    ("edit", "update", "trainingtemplates.lbtrain.io", False),
    *(
        ("admin", verb, "trainingtemplates.lbtrain.io", True)
        for verb in ("create", "update", "patch", "delete")
    ),
    ("admin", "create", "modelruns.lbtrain.io", True),
]

MODEL_RUN = {
    "apiVersion": "lbtrain.io/v1alpha1",
    "kind": "ModelRun",
    "metadata": {"name": "by-hand"},
    "spec": {"modelRunId": "clx0roles0000000000000001", "modelType": "ner"},
}
TEMPLATE = {
    "apiVersion": "lbtrain.io/v1alpha1",
    "kind": "TrainingTemplate",
    "metadata": {"name": "team-ner"},
    "spec": {"modelType": "ner", "image": "127.0.0.1:1/ml/lbtrain-trainer:0.2.0"},
}


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def eventually(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.5)


@pytest.fixture
def aggregation_controller(control_plane: ControlPlane, tmp_path: Path) -> Iterator[None]:
    """A kube-controller-manager running the clusterrole-aggregation controller only."""
    log = (tmp_path / "kcm-aggregation.log").open("wb")
    proc = subprocess.Popen(
        [
            str(control_plane.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={control_plane.kubeconfig}",
            "--controllers=clusterrole-aggregation-controller",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        assert proc.poll() is None, (tmp_path / "kcm-aggregation.log").read_text()[-3000:]
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def bind(kubectl, namespace: str, user: str, cluster_role: str) -> None:
    """ServiceAccount `user` bound to the built-in `cluster_role` in `namespace` only."""
    ok(kubectl("create", "serviceaccount", user, f"--namespace={namespace}"))
    ok(
        kubectl(
            "create",
            "rolebinding",
            user,
            f"--clusterrole={cluster_role}",
            f"--serviceaccount={namespace}:{user}",
            f"--namespace={namespace}",
        )
    )


def as_user(kubectl, namespace: str, user: str, *args: str, doc: dict[str, Any] | None = None):
    """A real request through the API server's authorizer, as ServiceAccount `user`."""
    return kubectl(
        *args,
        f"--namespace={namespace}",
        f"--as=system:serviceaccount:{namespace}:{user}",
        input=None if doc is None else yaml.safe_dump(doc),
    )


async def test_view_edit_and_admin_cover_lbtrain(
    namespace: str,
    extra_namespace: str,
    kubectl,
    crds: None,
    aggregation_controller: None,
    releases: Releases,
) -> None:
    releases.install("lbtrain", namespace)
    for role in ("view", "edit", "admin"):
        bind(kubectl, namespace, role, role)
    # The controller updates view, edit and admin one after the other (admin also takes what
    # edit and view took): wait until every grant has arrived.
    grants = [row for row in ROLE_MATRIX if row[3]]
    eventually(
        lambda: all(can_i(kubectl, r, namespace, v, res, namespace) for r, v, res, _ in grants),
        "the built-in roles aggregate the chart's rules",
    )

    # What a person bound to each built-in role does, as real requests: view lists (nothing
    # yet) but cannot start a run; edit can.
    assert ok(as_user(kubectl, namespace, "view", "get", "modelruns", "-o", "name")) == ""
    denied = as_user(kubectl, namespace, "view", "create", "-f", "-", doc=MODEL_RUN)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    ok(as_user(kubectl, namespace, "edit", "create", "-f", "-", doc=MODEL_RUN))
    names = ok(as_user(kubectl, namespace, "view", "get", "modelruns", "-o", "name"))
    assert names.split() == ["modelrun.lbtrain.io/by-hand"]
    denied = as_user(kubectl, namespace, "edit", "create", "-f", "-", doc=TEMPLATE)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    ok(as_user(kubectl, namespace, "admin", "create", "-f", "-", doc=TEMPLATE))
    ok(as_user(kubectl, namespace, "edit", "delete", "modelrun", "by-hand", "--wait=false"))

    # The whole matrix, and nothing in a namespace where nobody was bound.
    wrong = [
        f"{role} {'cannot' if allowed else 'can'} {verb} {resource}"
        for role, verb, resource, allowed in ROLE_MATRIX
        if can_i(kubectl, role, namespace, verb, resource, namespace) != allowed
    ]
    assert not wrong, "\n".join(wrong)
    assert not can_i(kubectl, "admin", namespace, "list", "modelruns.lbtrain.io", extra_namespace)

    # Uninstall takes the rules out of the built-in roles again.
    releases.uninstall("lbtrain", namespace)
    eventually(
        lambda: not can_i(kubectl, "view", namespace, "list", "modelruns.lbtrain.io", namespace),
        "the built-in view role drops the chart's rules after uninstall",
    )


def webhook_secret(kubectl, namespace: str) -> str:
    doc = json.loads(
        ok(kubectl("get", "secret", "lbtrain-webhook-secret", "-n", namespace, "-o", "json"))
    )
    return base64.b64decode(doc["data"]["secret"]).decode()


async def test_generated_webhook_secret_survives_uninstall_and_reinstall(
    namespace: str, kubectl, releases: Releases
) -> None:
    releases.install("lbtrain", namespace)
    given_to_labelbox = webhook_secret(kubectl, namespace)
    releases.uninstall("lbtrain", namespace)
    # Everything else of the release is gone; the Secret stays.
    assert ok(kubectl("get", "deployments", "-n", namespace, "-o", "name")).strip() == ""
    assert webhook_secret(kubectl, namespace) == given_to_labelbox
    # A reinstall of the same release adopts it and keeps its value.
    releases.install("lbtrain", namespace)
    assert webhook_secret(kubectl, namespace) == given_to_labelbox
