"""Upgrading a release of the previous chart (0.1.0, packaged in fixtures/ before any 0.2.0
change) to this one, exactly as the chart README's upgrade notes say: CRDs first
(`helm show crds | kubectl apply --server-side --force-conflicts`), then `helm upgrade -f` the same
values file (never --reuse-values). What Labelbox and users hold on to must survive: the generated
webhook secret (Labelbox signs with it) and the ModelRuns (same UID, so nothing re-runs). And the
new chart's defaults must arrive, which --reuse-values would have prevented."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import API_KEY, CHART, IMAGE_REGISTRY, REPO, Helm, Releases

pytestmark = pytest.mark.testbed

PREVIOUS = Path(__file__).parent / "fixtures" / "lbtrain-0.1.0.tgz"
CRD_NAMES = ("crd/modelruns.lbtrain.io", "crd/trainingtemplates.lbtrain.io")


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def get(kubectl, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(kubectl("get", *args, "-o", "json")))
    return doc


def webhook_secret(kubectl, namespace: str) -> str:
    data = get(kubectl, "secret", "lbtrain-webhook-secret", "-n", namespace)["data"]
    return base64.b64decode(data["secret"]).decode()


def chart_of(helm: Helm, namespace: str) -> str:
    [release] = json.loads(helm("list", f"--namespace={namespace}", "-o", "json").stdout)
    assert release["status"] == "deployed", release
    return str(release["chart"])


async def test_upgrade_from_0_1_0_keeps_the_secret_and_model_runs(
    namespace: str, kubectl, releases: Releases, cluster_helm: Helm, tmp_path: Path
) -> None:
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["version"] == "0.2.0"
    values = tmp_path / "my-values.yaml"
    values.write_text(yaml.safe_dump({"labelbox": {"apiKey": API_KEY}, "webhook": {"replicas": 1}}))

    # The previous release, as a user installed it: its own CRDs, then the chart. The CRDs go in
    # by kubectl, not by `helm install`, because this API server is shared with the other chart
    # tests and may hold this version's CRDs already (Helm 4 applies a chart's CRDs server-side,
    # and would conflict with kubectl's field manager). Step 1 below puts the new ones back.
    old_crds = cluster_helm("show", "crds", str(PREVIOUS)).stdout
    ok(kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=old_crds))
    ok(kubectl("wait", "--for=condition=Established", "--timeout=60s", *CRD_NAMES))
    releases.install(
        "lbtrain", namespace, chart=PREVIOUS, extra=(f"--values={values}", "--skip-crds")
    )
    assert chart_of(cluster_helm, namespace) == "lbtrain-0.1.0"
    ok(kubectl("wait", "--for=condition=Established", "--timeout=60s", *CRD_NAMES))
    ok(kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "modelrun.yaml")))
    before = get(kubectl, "modelrun", "debug-run-1", "-n", namespace)
    secret = webhook_secret(kubectl, namespace)
    old_service = get(kubectl, "service", "lbtrain-webhook", "-n", namespace)
    assert {p["name"] for p in old_service["spec"]["ports"]} == {"http", "metrics"}
    old_tt = get(kubectl, "trainingtemplate", "ner", "-n", namespace)
    assert old_tt["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}

    # 1. CRDs first, as the README says.
    crds = cluster_helm("show", "crds", str(CHART)).stdout
    ok(kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds))
    ok(kubectl("wait", "--for=condition=Established", "--timeout=60s", *CRD_NAMES))
    # 2. The release, with the same values file plus the registry 0.2.0 requires (0.1.0's
    # schema knew no imageRegistry).
    mine = yaml.safe_load(values.read_text()) | {"imageRegistry": IMAGE_REGISTRY}
    values.write_text(yaml.safe_dump(mine))
    result = cluster_helm(
        "upgrade", "lbtrain", str(CHART), f"--namespace={namespace}", f"--values={values}"
    )
    assert "Helm never upgrades CRDs" in result.stdout
    assert chart_of(cluster_helm, namespace) == "lbtrain-0.2.0"

    # What Labelbox and the user hold on to survived.
    assert webhook_secret(kubectl, namespace) == secret, "Labelbox's secret must keep working"
    kept = get(kubectl, "secret", "lbtrain-webhook-secret", "-n", namespace)["metadata"]
    assert kept["annotations"]["helm.sh/resource-policy"] == "keep", "and now outlives uninstall"
    after = get(kubectl, "modelrun", "debug-run-1", "-n", namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"] == before["spec"]
    # The values file applied again; the new defaults and objects arrived.
    webhook = get(kubectl, "deployment", "lbtrain-webhook", "-n", namespace)
    assert webhook["spec"]["replicas"] == 1
    service = get(kubectl, "service", "lbtrain-webhook", "-n", namespace)
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    metrics = get(kubectl, "service", "lbtrain-webhook-metrics", "-n", namespace)
    assert metrics["spec"]["type"] == "ClusterIP"
    for tt in get(kubectl, "trainingtemplates", "-n", namespace)["items"]:
        assert "nodeSelector" not in tt["spec"], tt["metadata"]["name"]
        assert tt["metadata"]["labels"]["helm.sh/chart"] == "lbtrain-0.2.0"
