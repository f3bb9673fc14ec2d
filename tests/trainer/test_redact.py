"""Messages about the artifact destination never carry a credential (lbtrain_trainer.redact),
and a failed probe is classified by what retrying can fix (lbtrain_trainer.artifacts)."""

from __future__ import annotations

import pytest

from lbtrain import contract
from lbtrain_trainer.artifacts import probe_failure
from lbtrain_trainer.redact import redact, redact_uri

ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY0001",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLETOKEN",
    "AWS_DEFAULT_REGION": "us-east-1",
    "SHORT_KEY": "abc",
}


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("s3://AKIA1:sEcReT@bucket/runs/mr1", "s3://***@bucket/runs/mr1"),
        ("s3://bucket/runs/mr1", "s3://bucket/runs/mr1"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1%2F2026&X-Amz-Signature=abc123&x=1",
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1",
        ),
        ("/artifacts/mr1", "/artifacts/mr1"),
    ],
)
def test_a_uri_loses_its_user_info_and_signature(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_credential_values_from_the_environment_are_masked_wherever_they_appear() -> None:
    text = (
        "signing with AKIAEXAMPLEKEY0001 and wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY "
        "(token FwoGZXIvYXdzEXAMPLETOKEN) in us-east-1, abc"
    )
    assert redact(text, ENV) == "signing with *** and *** (token ***) in us-east-1, abc"


def test_a_missing_bucket_and_refused_keys_are_configuration_exit_78() -> None:
    missing = probe_failure("s3://b/x", FileNotFoundError("The specified bucket does not exist"))
    refused = probe_failure("s3://b/x", PermissionError("SignatureDoesNotMatch"))
    assert missing.exit_code == refused.exit_code == contract.EXIT_DESTINATION_UNUSABLE
    assert str(missing).startswith("artifact destination s3://b/x is unusable: its bucket")
    assert "the credentials were refused" in str(refused)


def test_no_credentials_is_recognised_by_name_without_importing_botocore() -> None:
    class NoCredentialsError(Exception):
        pass

    failure = probe_failure("s3://b/x", NoCredentialsError("Unable to locate credentials"))
    assert failure.exit_code == contract.EXIT_DESTINATION_UNUSABLE
    assert "no usable credentials were found" in str(failure)


def test_an_endpoint_that_does_not_answer_is_retried() -> None:
    failure = probe_failure("s3://b/x", ConnectionRefusedError("connect to 10.0.0.9:9000"))
    assert failure.exit_code == 1
    assert "did not answer a probe write (retried)" in str(failure)
