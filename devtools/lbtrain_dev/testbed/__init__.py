"""The testbed: a real local Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager) for tests and local development, with no container runtime.

There is no kubelet and no scheduler: pods created by the Job controller stay Pending until a
fake kubelet (`lbtrain_dev.testbed.fake_kubelet`) patches their status, as Kubernetes' own Job
integration tests do.
"""

from lbtrain_dev.testbed.controlplane import ControlPlane, KubectlError, StartError

__all__ = ["ControlPlane", "KubectlError", "StartError"]
