"""The operator's flags: an environment variable sets a flag's default, the command line wins
over it, an empty one counts as unset, and `--help` names each variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbtrain.contract import DEFAULT_LABELBOX_ENDPOINT
from lbtrain_operator.cli import parser
from lbtrain_operator.flags import FLAGS, KUBECONFIG


def test_an_environment_variable_sets_the_default_and_the_command_line_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LBTRAIN_METRICS_PORT", "9100")
    monkeypatch.setenv("LABELBOX_API_KEY_FILE", "/run/secrets/key")
    monkeypatch.setenv("LBTRAIN_DEFAULT_QUEUE", "team-a")
    args = parser().parse_args([])
    assert (args.metrics_port, args.labelbox_api_key_file) == (9100, Path("/run/secrets/key"))
    assert args.default_queue == "team-a"
    args = parser().parse_args(["--metrics-port=0", "--default-queue="])
    assert (args.metrics_port, args.default_queue) == (0, "")


def test_an_empty_environment_variable_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LBTRAIN_METRICS_PORT", "LABELBOX_ENDPOINT", "KUBECONFIG"):
        monkeypatch.setenv(name, "")
    args = parser().parse_args([])
    assert (args.metrics_port, args.labelbox_endpoint) == (9090, DEFAULT_LABELBOX_ENDPOINT)
    assert args.kubeconfig is None


def test_help_names_every_flag_with_its_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in (KUBECONFIG, *FLAGS):
        assert f"--{flag.name}" in text
        if flag.env:
            assert f"(env {flag.env})" in text
    assert "env LBTRAIN_NAMESPACES, comma-separated" in text
    assert "(default: 9090)" in text and "(default: lbtrain-labelbox)" in text
