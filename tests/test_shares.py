"""Read-only share links: create, list, revoke; a token opens one run from anywhere, and nothing else."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import RetrainError
from pipeline.shares import (
    MAX_SHARES_PER_WORKSPACE,
    SHARES_FILE,
    ShareRefused,
    create_share,
    list_shares,
    resolve_share,
    revoke_run_shares,
    revoke_share,
)


def _workspace(root, token: str, runs: tuple[str, ...] = ("run-20261130-101500-abcd",)):
    workspace = root / "workspaces" / token
    for run in runs:
        (workspace / "runs" / run).mkdir(parents=True)
        (workspace / "runs" / run / ".retrain-studio-run").touch()
    return workspace


@pytest.fixture
def two_workspaces(tmp_path):
    first = _workspace(tmp_path, "A" * 22, ("run-20261130-101500-abcd", "run-20261130-111500-beef"))
    second = _workspace(tmp_path, "B" * 22)
    return tmp_path, first, second


def test_a_token_opens_its_run_read_only_from_any_session(two_workspaces):
    root, first, second = two_workspaces
    share = create_share(first, "run-20261130-101500-abcd", root)
    other = create_share(second, "run-20261130-101500-abcd", root)
    opened = resolve_share(share.token, root)
    assert opened.run_dir == (first / "runs" / "run-20261130-101500-abcd").resolve() and opened.read_only
    assert resolve_share(other.token, root).run_dir.is_relative_to(second.resolve())
    assert len(share.token) == 32 and share.token != other.token
    assert [s.token for s in list_shares(first)] == [share.token]
    assert list_shares(first, "run-20261130-111500-beef") == []


def test_revoked_unknown_and_malformed_tokens_are_refused_clearly(two_workspaces):
    root, first, _ = two_workspaces
    share = create_share(first, "run-20261130-101500-abcd", root)
    assert revoke_share(first, share.token, root) is True
    assert revoke_share(first, share.token, root) is False
    for token in (share.token, "x" * 32, "", None, "../../etc/passwd", "é" * 32, share.token[:-1]):
        with pytest.raises(ShareRefused, match="not valid"):
            resolve_share(token, root)
    assert list_shares(first) == []


def test_a_half_done_revoke_never_leaves_the_link_working(two_workspaces):
    root, first, _ = two_workspaces
    share = create_share(first, "run-20261130-101500-abcd", root)
    (first / SHARES_FILE).write_text(json.dumps({"format": "retrain-studio/shares", "shares": []}))  # index left
    with pytest.raises(ShareRefused, match="not valid"):
        resolve_share(share.token, root)


def test_damaged_files_and_deleted_runs_refuse_with_a_reason(two_workspaces):
    root, first, _ = two_workspaces
    share = create_share(first, "run-20261130-101500-abcd", root)
    import shutil

    shutil.rmtree(first / "runs" / "run-20261130-101500-abcd")
    with pytest.raises(ShareRefused, match="has been deleted"):
        resolve_share(share.token, root)
    other = create_share(first, "run-20261130-111500-beef", root)
    (first / SHARES_FILE).write_bytes(b'{"format": "retrain-studio/sha')
    with pytest.raises(ShareRefused, match="damaged"):
        resolve_share(other.token, root)
    assert list_shares(first) == []
    index = next((root / "shares").glob("*.json"))
    index.write_bytes(b"\xff")
    with pytest.raises(ShareRefused):
        resolve_share(other.token, root)


def test_only_runs_of_the_workspace_can_be_shared(two_workspaces, tmp_path):
    root, first, second = two_workspaces
    for name in ("../" + second.name, "", "run-missing", "..", "a/b"):
        with pytest.raises(RetrainError):
            create_share(first, name, root)
    (first / "runs" / "not-ours").mkdir()
    with pytest.raises(RetrainError, match="not in this workspace"):
        create_share(first, "not-ours", root)


def test_the_index_alone_opens_nothing(two_workspaces):
    root, first, _ = two_workspaces
    share = create_share(first, "run-20261130-101500-abcd", root)
    index_text = "".join(path.read_text() for path in (root / "shares").glob("*.json"))
    assert share.token not in index_text


def test_links_per_workspace_are_capped_and_a_run_can_lose_all_its_links(two_workspaces):
    root, first, _ = two_workspaces
    for _ in range(MAX_SHARES_PER_WORKSPACE):
        create_share(first, "run-20261130-101500-abcd", root)
    with pytest.raises(RetrainError, match="the most it may have"):
        create_share(first, "run-20261130-111500-beef", root)
    assert revoke_run_shares(first, "run-20261130-101500-abcd", root) == MAX_SHARES_PER_WORKSPACE
    assert list_shares(first) == [] and not list((root / "shares").glob("*.json"))


# ---- Hostile records and callers (attack2) --------------------------------------------------------------------------


@pytest.mark.parametrize("workspace", ["workspaces/x\u0000", "x" * 5000, "a/" * 3000])
def test_an_index_entry_no_path_can_hold_is_refused_not_raised(two_workspaces, workspace):
    root, first, _ = two_workspaces
    share = create_share(first, "run-20261130-101500-abcd", root)
    index = next((root / "shares").glob("*.json"))
    index.write_text(json.dumps({"workspace": workspace, "run": "run-20261130-101500-abcd"}))
    with pytest.raises(ShareRefused):
        resolve_share(share.token, root)


def test_a_run_name_too_long_for_the_disk_is_refused_clearly(two_workspaces):
    root, first, _ = two_workspaces
    with pytest.raises(RetrainError, match="not in this workspace|not a run name"):
        create_share(first, "r" * 5000, root)
    share = create_share(first, "run-20261130-101500-abcd", root)
    # Both records edited to the same impossible name: refused, not an OSError.
    for path in [first / SHARES_FILE, *(root / "shares").glob("*.json")]:
        path.write_text(path.read_text().replace("run-20261130-101500-abcd", "r" * 5000))
    with pytest.raises(ShareRefused, match="deleted"):
        resolve_share(share.token, root)


def test_revoking_a_token_of_the_wrong_type_is_false(two_workspaces):
    root, first, _ = two_workspaces
    create_share(first, "run-20261130-101500-abcd", root)
    assert revoke_share(first, None, root) is False and revoke_share(first, 5, root) is False
    assert len(list_shares(first)) == 1


def test_a_damaged_list_of_links_is_set_aside_by_the_next_create(two_workspaces):
    """The message said "create a new share link", but create raised on the damaged list too: a dead end."""
    root, first, _ = two_workspaces
    old = create_share(first, "run-20261130-101500-abcd", root)
    (first / SHARES_FILE).write_bytes(b'{"format": "retrain-studio/sha')
    assert revoke_share(first, old.token, root) is False  # every link of a damaged list is refused already
    new = create_share(first, "run-20261130-101500-abcd", root)
    assert resolve_share(new.token, root).run == "run-20261130-101500-abcd"
    with pytest.raises(ShareRefused):
        resolve_share(old.token, root)  # not brought back by the new list
    kept = list(first.glob(SHARES_FILE + ".damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b'{"format": "retrain-studio/sha'


def test_a_link_with_a_non_finite_creation_time_is_damage(two_workspaces):
    root, first, _ = two_workspaces
    share = create_share(first, "run-20261130-101500-abcd", root)
    text = (first / SHARES_FILE).read_text()
    (first / SHARES_FILE).write_text(text.replace(str(share.created), "NaN"))
    assert list_shares(first) == []
