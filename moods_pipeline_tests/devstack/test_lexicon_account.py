"""The devstack's lexicon authority account, created through the project's PDS client: once,
again when it is gone from the PDS, and recovered (admin password reset) when its password
file is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from moods_pipeline.atproto.client import PdsClient
from moods_pipeline.devstack import stack
from moods_pipeline.secret import Secret


@pytest.mark.integration
def test_lexicon_account_created_kept_and_recovered(local_pds, tmp_path: Path) -> None:
    paths = stack.StackPaths.of(tmp_path)
    paths.lexicon_password.parent.mkdir(parents=True, exist_ok=True)
    config: dict = {}
    # invite_required: an invite code from the admin API (the session's PDS checks a code given)
    did = stack._ensure_lexicon_account(paths, config, local_pds.url, local_pds.admin_password, True)
    first_password = paths.lexicon_password.read_text().strip()
    assert config["lexicon"] == {"did": did, "handle": stack.LEXICON_HANDLE}
    with PdsClient(local_pds.url) as client:
        assert client.login(stack.LEXICON_HANDLE, Secret(first_password), expected_did=did).did == did

        # known and present: kept as is
        assert stack._ensure_lexicon_account(paths, config, local_pds.url, local_pds.admin_password, False) == did
        assert paths.lexicon_password.read_text().strip() == first_password

        # the password file and config lost: the handle is taken, so the password is reset
        paths.lexicon_password.unlink()
        again = stack._ensure_lexicon_account(paths, {}, local_pds.url, local_pds.admin_password, False)
        second_password = paths.lexicon_password.read_text().strip()
        assert again == did and second_password != first_password
        assert client.login(stack.LEXICON_HANDLE, Secret(second_password), expected_did=did).did == did

        # gone from the PDS: created afresh
        client.admin(local_pds.admin_password).delete_account(did)
        fresh = stack._ensure_lexicon_account(paths, config, local_pds.url, local_pds.admin_password, False)
        assert fresh != did and client.describe_repo(fresh) is not None
        client.admin(local_pds.admin_password).delete_account(fresh)  # the session's PDS is shared
