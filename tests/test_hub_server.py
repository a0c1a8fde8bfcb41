"""The local Hub server (tests/hub_server.py) against the real huggingface_hub client and transformers."""

from __future__ import annotations

import os

import pytest
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hub_server import LocalHub, hub_env


@pytest.fixture
def hub(tmp_path):
    """A running LocalHub, with this process's huggingface_hub/transformers pointed at it (cache in tmp_path)."""
    with LocalHub() as server, hub_env(server, cache_dir=tmp_path / "hf_cache"):
        yield server


def _folder(path, files: dict) -> str:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return str(path)


CARD = b"---\nlicense: apache-2.0\ntags:\n- hf_ragtrain\n---\n# A tiny repo\n"


def test_hub_env_points_the_client_at_the_server_and_restores(tmp_path):
    offline_before, endpoint_before = constants.HF_HUB_OFFLINE, constants.ENDPOINT
    with LocalHub() as server:
        with hub_env(server, cache_dir=tmp_path):
            assert constants.ENDPOINT == server.url and os.environ["HF_ENDPOINT"] == server.url
            assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ
            assert constants.HF_HUB_CACHE == str(tmp_path)
            assert HfApi().whoami()["name"] == "user"
            from huggingface_hub import whoami  # module-level helper: an HfApi built at import time
            assert whoami()["name"] == "user"
        assert (constants.HF_HUB_OFFLINE, constants.ENDPOINT) == (offline_before, endpoint_before)


def test_create_repo_exist_ok_and_conflict(hub):
    api = HfApi()
    url = api.create_repo("user/tiny", exist_ok=True)
    assert url == f"{hub.url}/user/tiny" and url.repo_id == "user/tiny"
    assert api.create_repo("user/tiny", exist_ok=True).repo_id == "user/tiny"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("user/tiny")
    assert err.value.response.status_code == 409
    assert api.create_repo("other", exist_ok=True).repo_id == "user/other"  # no namespace: the whoami user
    assert api.repo_exists("user/tiny") and not api.repo_exists("user/missing")
    assert hub.files("user/tiny") == {}


def test_upload_list_download_and_history(hub, tmp_path):
    api = HfApi()
    api.create_repo("user/tiny", exist_ok=True)
    files = {"README.md": CARD, "config.json": b'{"model_type": "bert"}', "sub/dir/weights.bin": bytes(range(256)) * 9}
    first = api.upload_folder(repo_id="user/tiny", folder_path=_folder(tmp_path / "v1", files), commit_message="v1")
    assert hub.files("user/tiny") == files and hub.commits == [("user/tiny", "v1")]
    assert sorted(api.list_repo_files("user/tiny")) == sorted(files)
    info = api.model_info("user/tiny")
    assert info.sha == first.oid and sorted(s.rfilename for s in info.siblings) == sorted(files)
    tree = {e.path: type(e).__name__ for e in api.list_repo_tree("user/tiny", recursive=True)}
    assert tree == {"README.md": "RepoFile", "config.json": "RepoFile", "sub": "RepoFolder", "sub/dir": "RepoFolder",
                    "sub/dir/weights.bin": "RepoFile"}
    assert [e.path for e in api.list_repo_tree("user/tiny", path_in_repo="sub")] == ["sub/dir"]
    paths = api.get_paths_info("user/tiny", ["config.json", "sub", "nope"])
    assert [(p.path, type(p).__name__) for p in paths] == [("config.json", "RepoFile"), ("sub", "RepoFolder")]

    local = hf_hub_download("user/tiny", "sub/dir/weights.bin")
    assert local.startswith(str(tmp_path / "hf_cache")) and open(local, "rb").read() == files["sub/dir/weights.bin"]

    changed = dict(files, **{"config.json": b'{"model_type": "bert", "v": 2}'})
    second = api.upload_folder(repo_id="user/tiny", folder_path=_folder(tmp_path / "v2", changed),
                               commit_message="v2")
    assert second.oid != first.oid and hub.head("user/tiny") == second.oid
    assert hub.commits[-1] == ("user/tiny", "v2")
    assert open(hf_hub_download("user/tiny", "config.json"), "rb").read() == changed["config.json"]
    old = hf_hub_download("user/tiny", "config.json", revision=first.oid)  # history: a sha resolves to its snapshot
    assert open(old, "rb").read() == files["config.json"]
    assert hub.files("user/tiny", revision=first.oid) == files
    assert [c.title for c in api.list_repo_commits("user/tiny")] == ["v2", "v1", "initial commit"]
    assert hub.unhandled == []


def test_unknown_repo_revision_and_file(hub, tmp_path):
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("user/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/missing", "config.json")
    api.create_repo("user/tiny")
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="user/tiny")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/tiny", "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("user/tiny", "config.json", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/missing")


def test_failed_commits(hub, tmp_path):
    api = HfApi()
    api.create_repo("user/tiny")
    # create_commit / upload_file do not retry the commit POST: the default 500 fails the upload
    hub.fail_commits = 1
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id="user/tiny")
    assert err.value.response.status_code == 500 and "simulated commit failure" in str(err.value)
    # upload_folder (hf_xet installed) retries 5xx commits: a status the client does not retry fails it at once
    hub.fail_commits, hub.fail_status = 1, 507
    folder = _folder(tmp_path / "f", {"README.md": CARD, "a.txt": b"a"})
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_folder(repo_id="user/tiny", folder_path=folder)
    assert err.value.response.status_code == 507 and "simulated commit failure" in str(err.value)
    assert hub.fail_commits == 0 and hub.commits == [] and hub.files("user/tiny") == {}
    api.upload_folder(repo_id="user/tiny", folder_path=folder)  # the next push goes through
    assert hub.files("user/tiny")["a.txt"] == b"a" and len(hub.commits) == 1


def test_stopped_server_gives_a_connection_error(tmp_path):
    import httpx2

    with LocalHub() as server, hub_env(server):
        HfApi().create_repo("user/tiny")
        server.stop()
        with pytest.raises(httpx2.ConnectError):
            HfApi().create_repo("user/tiny", exist_ok=True)  # not retried: fails at once


def test_transformers_round_trip(hub, tiny_ce_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    api = HfApi()
    api.create_repo("user/ce", exist_ok=True)
    api.upload_folder(repo_id="user/ce", folder_path=tiny_ce_path)
    model = AutoModelForSequenceClassification.from_pretrained("user/ce")
    tokenizer = AutoTokenizer.from_pretrained("user/ce")
    reference = AutoModelForSequenceClassification.from_pretrained(tiny_ce_path)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    assert tokenizer("how do i sort")["input_ids"] == AutoTokenizer.from_pretrained(tiny_ce_path)(
        "how do i sort")["input_ids"]
    assert any(m == "GET" and "/resolve/" in p for m, p in hub.requests)  # really went over HTTP
