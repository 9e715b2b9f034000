"""What the state-dir code relies on from the S3 server the tests run (SeaweedFS, ``s3_server.py``):
a written object is listed at once, a PUT replaces the whole object, a delete removes it from
reads and listings, a missing object or bucket reads as missing, and only the test identity's
signature is accepted (so the credential tests test something)."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration  # a server in a child process


def test_listing_overwrite_delete_and_missing(local_s3, s3_bucket):
    fs = local_s3.filesystem()
    folder = f"{s3_bucket}/semantics-{uuid.uuid4().hex[:8]}"
    fs.pipe(f"{folder}/a.json", b"first, longer version")
    fs.pipe(f"{folder}/b.json", b"b")
    assert sorted(fs.ls(folder)) == [f"{folder}/a.json", f"{folder}/b.json"]

    fs.pipe(f"{folder}/a.json", b"short")  # whole object replaced, nothing of the old left
    assert fs.cat(f"{folder}/a.json") == b"short"

    fs.rm(f"{folder}/a.json")
    assert fs.ls(folder) == [f"{folder}/b.json"]
    with pytest.raises(FileNotFoundError):
        fs.cat(f"{folder}/a.json")
    with pytest.raises(FileNotFoundError):
        fs.cat(f"{s3_bucket}/never-written-{uuid.uuid4().hex[:8]}.json")
    # No bucket is created on write (as on AWS): the server was started so.
    with pytest.raises(FileNotFoundError):
        fs.pipe(f"no-such-bucket-{uuid.uuid4().hex[:8]}/x.json", b"x")


def test_only_the_test_identity_is_accepted(local_s3, s3_bucket):
    import botocore.config
    import botocore.exceptions
    import botocore.session

    def client(secret):
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=local_s3.endpoint, region_name="us-east-1",
            aws_access_key_id="moods-test-access", aws_secret_access_key=secret,
            config=botocore.config.Config(retries={"max_attempts": 1}))

    from moods_pipeline_tests.storage.s3_server import SECRET_KEY

    assert client(SECRET_KEY).list_objects_v2(Bucket=s3_bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        client("a-wrong-secret").list_objects_v2(Bucket=s3_bucket)
