"""A small, in-memory, Hugging Face Hub-compatible HTTP server for tests (standard library only).

Point the *real* ``huggingface_hub`` client (and ``transformers``) at it to push repos and download them back::

    with LocalHub() as hub, hub_env(hub, cache_dir=tmp_path / "cache"):
        api = HfApi()
        api.create_repo("user/tiny", exist_ok=True)
        api.upload_folder(repo_id="user/tiny", folder_path=folder)
        model = AutoModelForSequenceClassification.from_pretrained("user/tiny")
        assert hub.files("user/tiny")["config.json"] == ...

What it speaks (what huggingface_hub 2.4 sends, see ``hf_api.py``, ``_commit_api.py``, ``_upload_pipeline.py``,
``file_download.py``):

* ``GET  /api/whoami-v2``
* ``POST /api/repos/create`` (409 + ``{"error", "url"}`` when it exists: ``create_repo(exist_ok=True)`` reads the
  ``url`` of that 409 body), ``DELETE /api/repos/delete``
* ``POST /api/validate-yaml`` (always valid: ``create_commit``/``upload_file`` call it when README.md is committed)
* ``POST /api/{type}s/{ns}/{name}/preupload/{rev}``: every file is ``"regular"`` (its content then comes inline,
  base64, in the commit; no LFS nor Xet upload ever happens); the current blob oid is returned so that the client
  drops unchanged files, as with the real Hub
* ``POST /api/{type}s/{ns}/{name}/commit/{rev}``: NDJSON ``header`` / ``file`` / ``deletedFile`` /
  ``deletedFolder`` lines (``lfsFile`` is refused: never announced by the preupload answer)
* ``GET  /api/{type}s/{ns}/{name}`` and ``.../revision/{rev}`` (sha, siblings, ...)
* ``GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]`` (``recursive``, ``expand``), ``POST .../paths-info/{rev}``
* ``GET  /api/{type}s/{ns}/{name}/commits/{rev}``, ``GET .../refs``, ``POST``/``DELETE .../branch/{branch}``
* ``GET``/``HEAD /{ns}/{name}/resolve/{rev}/{path}`` (also ``/datasets/...``, ``/spaces/...``) with ``ETag``
  (git blob sha1), ``X-Repo-Commit``, ``Content-Length``; ``Range`` is honoured. No redirects.

Revisions: branch names (``main`` exists from creation, on an initial empty commit) and commit shas (full, or a
unique prefix of 7+ characters); every commit gets a new sha and the history is kept, so an old sha still resolves
to its snapshot. Errors are 404s carrying ``X-Error-Code`` (``RepoNotFound`` / ``RevisionNotFound`` /
``EntryNotFound``) and a JSON ``{"error": ...}`` body, which the client turns into ``RepositoryNotFoundError``,
``RevisionNotFoundError``, ``RemoteEntryNotFoundError`` (an ``EntryNotFoundError``).

Configuration is read at import time: ``huggingface_hub.constants`` copies ``HF_ENDPOINT`` (into ``ENDPOINT``,
``HUGGINGFACE_CO_URL_TEMPLATE`` and ``HF_URL_HOSTS``) and ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` (into
``HF_HUB_OFFLINE``) when it is first imported; the module-level helpers (``huggingface_hub.upload_folder``,
``create_repo``, ...) are methods of one ``HfApi()`` built at import (``huggingface_hub.hf_api.api``), and
``transformers.utils.hub.hf_api()`` caches its own ``HfApi`` instance. Setting the environment variables is
therefore only enough *before* importing huggingface_hub; :func:`hub_env` patches all of the above so that a
process which already imported huggingface_hub / transformers (pytest, where ``conftest.py`` sets
``HF_HUB_OFFLINE=1``) talks to the local hub, then restores everything.

Failure injection: ``hub.fail_commits = n`` makes the next ``n`` commit requests answer ``hub.fail_status``
(default 500) with a JSON error. NOTE: with ``hf_xet`` installed, ``upload_folder`` commits through
``_upload_pipeline`` and retries the commit POST on 408/429/500/502/503/504 (``http_backoff``: 5 retries, sleeping
1+2+4+8+8 s), so ``fail_commits = 1`` with a 500 is absorbed by a retry 1 s later. To make a push fail at once, use
a status the client does not retry (e.g. ``hub.fail_status = 507``), or ``fail_commits >= 6`` with a 5xx (slow).
``create_commit`` / ``upload_file`` do not retry the commit POST.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["LocalHub", "hub_env"]

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_HEX = re.compile(r"^[0-9a-f]{7,40}$")


def _git_blob_oid(data: bytes) -> str:
    """The git sha1 of a blob: what the Hub reports as ``oid``/``blobId`` and as ``ETag`` for a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _is_true(value) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class _Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict  # path -> bytes: the full snapshot (never mutated once stored)


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict = field(default_factory=dict)  # oid -> _Commit
    branches: dict = field(default_factory=dict)  # name -> oid

    def resolve(self, revision: str) -> _Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if _HEX.match(revision):
            found = [c for oid, c in self.commits.items() if oid.startswith(revision)]
            if len(found) == 1:
                return found[0]
        return None


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, extra=None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}
        self.extra = extra or {}


class LocalHub:
    """In-memory Hub served over HTTP from a daemon thread.

    Attributes:
        fail_commits: when > 0, the next that-many commit requests answer ``fail_status`` (decremented each time).
        fail_status: HTTP status of those simulated failures (default 500; see the module docstring about retries).
        commits: ``(repo_id, summary)`` of each successful commit, in order.
        requests: ``(method, path)`` of every request served (path without the query string).
        unhandled: ``(method, path)`` of the requests no route matched (answered 404 without ``X-Error-Code``).
        username: the name ``whoami`` returns and the namespace of repos created without one.
        token: if set, write requests (and whoami) must send ``Authorization: Bearer <token>`` and any request
            sending another token gets a 401; if None (default) every token, or none, is accepted.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, username: str = "user", token: str | None = None):
        self.host, self.port = host, port
        self.username, self.token = username, token
        self.fail_commits = 0
        self.fail_status = 500
        self.commits: list = []
        self.requests: list = []
        self.unhandled: list = []
        self._repos: dict = {}  # (repo_type, repo_id) -> _Repo
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set = set()
        self._counter = itertools.count()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "LocalHub":
        if self._server is not None:
            return self
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"LocalHub:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections, so that the next request gets a connection error."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ inspection helpers

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict:
        """``{path: content}`` the server holds for ``repo_id`` at ``revision`` (KeyError if unknown)."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                raise KeyError(f"no {repo_type} repo {repo_id!r} on this LocalHub")
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"no revision {revision!r} in {repo_id!r}")
            return dict(commit.files)

    def repo_ids(self, repo_type: str = "model") -> list:
        with self._lock:
            return sorted(rid for (rtype, rid) in self._repos if rtype == repo_type)

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha ``revision`` points to."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return commit.oid

    # ------------------------------------------------------------------ state changes (called with the lock held)

    def _new_commit(self, repo: _Repo, parent: _Commit | None, files: dict, title: str, message: str) -> _Commit:
        seed = f"{repo.repo_type}/{repo.repo_id}\n{parent.oid if parent else ''}\n{title}\n{time.time_ns()}\n" \
               f"{next(self._counter)}\n" + "\n".join(f"{p} {_git_blob_oid(d)}" for p, d in sorted(files.items()))
        commit = _Commit(oid=hashlib.sha1(seed.encode()).hexdigest(), parent=parent.oid if parent else None,
                         title=title, message=message, date=_now_iso(), files=files)
        repo.commits[commit.oid] = commit
        return commit

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now_iso())
        repo.branches["main"] = self._new_commit(repo, None, {}, "initial commit", "").oid
        self._repos[(repo_type, repo_id)] = repo
        return repo

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{_URL_PREFIX.get(repo_type, '')}{repo_id}"


# ---------------------------------------------------------------------- JSON views of the store


def _file_entry(path: str, data: bytes) -> dict:
    return {"type": "file", "oid": _git_blob_oid(data), "size": len(data), "path": path}


def _dir_oid(files: dict, prefix: str) -> str:
    listing = "\n".join(f"{p} {_git_blob_oid(d)}" for p, d in sorted(files.items()) if p.startswith(prefix))
    return hashlib.sha1(f"tree {prefix}\n{listing}".encode()).hexdigest()


def _tree_entries(files: dict, base: str, recursive: bool) -> list | None:
    """Entries under ``base`` ('' = root) as the Hub's tree endpoint lists them; None if ``base`` does not exist."""
    base = base.strip("/")
    if base and base in files:
        return [_file_entry(base, files[base])]
    prefix = base + "/" if base else ""
    dirs, out = set(), []
    for path in sorted(files):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            dirs.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            out.append(_file_entry(path, files[path]))
    if base and not out and not dirs:
        return None
    out += [{"type": "directory", "oid": _dir_oid(files, d + "/"), "size": 0, "path": d} for d in dirs]
    return sorted(out, key=lambda e: e["path"])


def _last_commit(repo: _Repo, head: _Commit, path: str, is_dir: bool) -> dict:
    """The latest commit (from ``head`` back) that changed ``path`` (a file, or anything under a folder)."""

    def view(c: _Commit):
        if is_dir:
            return {p: d for p, d in c.files.items() if p.startswith(path + "/")}
        return c.files.get(path)

    commit = head
    while commit.parent is not None:
        parent = repo.commits[commit.parent]
        if view(parent) != view(commit):
            break
        commit = parent
    return {"id": commit.oid, "title": commit.title, "date": commit.date}


# ---------------------------------------------------------------------- request handler


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries a Content-Length
    timeout = 60  # idle keep-alive connections are dropped after a minute
    server_version = "LocalHub/1.0"

    # quiet: the test output is not the place for an access log
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass

    def setup(self):
        super().setup()
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self):
        with contextlib.suppress(OSError):
            super().finish()
        with self.hub._lock:
            self.hub._conns.discard(self.connection)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ---------------------------------------------------------------- plumbing

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict | None = None, length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _dispatch(self, method: str):
        hub = self.hub
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        with hub._lock:
            hub.requests.append((method, split.path))
        try:
            body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
            self._check_auth(method, segments)
            if not self._route(method, segments, body):
                with hub._lock:
                    hub.unhandled.append((method, split.path))
                raise _HttpError(404, f"LocalHub: no route for {method} {split.path}")
        except _HttpError as err:
            headers = dict(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers.setdefault("X-Error-Message", err.message.encode("ascii", "replace").decode())
            self._json({"error": err.message, **err.extra}, status=err.status, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - report server bugs to the client instead of hanging it
            self._json({"error": f"LocalHub internal error: {type(exc).__name__}: {exc}"}, status=500)

    def _check_auth(self, method: str, segments: list):
        expected = self.hub.token
        if expected is None:
            return
        auth = self.headers.get("Authorization")
        is_write = method in ("POST", "PUT", "DELETE") and segments[:2] != ["api", "validate-yaml"]
        is_whoami = segments[:2] == ["api", "whoami-v2"]
        if (auth is not None and auth != f"Bearer {expected}") or (auth is None and (is_write or is_whoami)):
            raise _HttpError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self.hub._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HttpError(404, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _commit_of(repo: _Repo, revision: str) -> _Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ---------------------------------------------------------------- routing

    def _route(self, method: str, seg: list, body: bytes) -> bool:
        hub = self.hub
        if seg and seg[0] == "api":
            api = seg[1:]
            if api == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if api == ["agent-harnesses"] and method == "GET":
                # huggingface_hub fetches this registry (best effort) when building its headers; a 404 makes it use
                # an empty one without caching anything under HF_HOME
                raise _HttpError(404, "LocalHub does not serve the agent harness registry")
            if api == ["validate-yaml"] and method == "POST":
                self._json({"errors": [], "warnings": []})
                return True
            if api == ["repos", "create"] and method == "POST":
                return self._create_repo(json.loads(body or b"{}"))
            if api == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo(json.loads(body or b"{}"))
            if len(api) >= 3 and api[0] in _TYPES:
                repo_type, repo_id, rest = _TYPES[api[0]], f"{api[1]}/{api[2]}", api[3:]
                with hub._lock:
                    return self._repo_api(method, repo_type, repo_id, rest, body)
            return False
        # file download: [/datasets|/spaces]/{ns}/{name}/resolve/{rev}/{path...}
        repo_type = "model"
        if seg and seg[0] in ("datasets", "spaces"):
            repo_type, seg = _TYPES[seg[0]], seg[1:]
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            with hub._lock:
                repo = self._repo(repo_type, f"{seg[0]}/{seg[1]}")
                commit = self._commit_of(repo, seg[3])
            return self._resolve(commit, "/".join(seg[4:]))
        return False

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list, body: bytes) -> bool:
        repo = self._repo(repo_type, repo_id)
        if method == "GET" and not rest:
            return self._info(repo, self._commit_of(repo, "main"))
        if method == "GET" and len(rest) == 2 and rest[0] == "revision":
            return self._info(repo, self._commit_of(repo, rest[1]))
        if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
            return self._preupload(repo, rest[1], json.loads(body or b"{}"))
        if method == "POST" and len(rest) == 2 and rest[0] == "commit":
            return self._commit(repo, rest[1], body)
        if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
            return self._tree(repo, self._commit_of(repo, rest[1]), "/".join(rest[2:]))
        if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            return self._paths_info(repo, self._commit_of(repo, rest[1]), body)
        if method == "GET" and len(rest) == 2 and rest[0] == "commits":
            return self._commits(repo, self._commit_of(repo, rest[1]))
        if method == "GET" and rest == ["refs"]:
            self._json({"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid}
                                     for b, oid in sorted(repo.branches.items())],
                        "converts": [], "tags": [], "pullRequests": []})
            return True
        if len(rest) == 2 and rest[0] == "branch" and method in ("POST", "DELETE"):
            return self._branch(method, repo, rest[1], json.loads(body or b"{}"))
        return False

    # ---------------------------------------------------------------- endpoints

    def _whoami(self) -> bool:
        if self.headers.get("Authorization") is None:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        name = self.hub.username
        self._json({"type": "user", "id": hashlib.sha1(name.encode()).hexdigest()[:24], "name": name,
                    "fullname": name, "email": f"{name}@localhub.invalid", "emailVerified": True, "canPay": False,
                    "isPro": False, "periodEnd": None, "avatarUrl": "", "orgs": [],
                    "auth": {"type": "access_token",
                             "accessToken": {"displayName": "localhub", "role": "write",
                                             "createdAt": "2024-01-01T00:00:00.000Z"}}})
        return True

    def _create_repo(self, payload: dict) -> bool:
        hub = self.hub
        name = payload.get("name")
        if not name or "/" in name:
            raise _HttpError(400, f"Invalid repo name: {name!r}")
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise _HttpError(400, f"LocalHub does not serve repos of type {repo_type!r}")
        repo_id = f"{payload.get('organization') or hub.username}/{name}"
        url = hub.repo_url(repo_type, repo_id)
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with hub._lock:
            if (repo_type, repo_id) in hub._repos:
                raise _HttpError(409, f"You already created this {repo_type} repo", extra={"url": url})
            hub._create_repo(repo_type, repo_id, private)
        self._json({"url": url, "name": repo_id, "id": repo_id})
        return True

    def _delete_repo(self, payload: dict) -> bool:
        hub = self.hub
        key = (payload.get("type") or "model", f"{payload.get('organization') or hub.username}/{payload.get('name')}")
        with hub._lock:
            if key not in hub._repos:
                raise _HttpError(404, "Repository not found", "RepoNotFound")
            del hub._repos[key]
        self._send(200)
        return True

    def _info(self, repo: _Repo, commit: _Commit) -> bool:
        files = commit.files
        siblings = [{"rfilename": p, "size": len(d), "blobId": _git_blob_oid(d)} for p, d in sorted(files.items())]
        info = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
            "lastModified": commit.date, "createdAt": repo.created_at, "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": siblings, "usedStorage": sum(len(d) for d in files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            with contextlib.suppress(Exception):
                config = json.loads(files["config.json"])
                info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
        self._json(info)
        return True

    def _preupload(self, repo: _Repo, revision: str, payload: dict) -> bool:
        commit = self._commit_of(repo, revision)
        answer = []
        for item in payload.get("files", []):
            existing = commit.files.get(item["path"])
            answer.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
                           "oid": _git_blob_oid(existing) if existing is not None else None})
        self._json({"files": answer, "commitOid": commit.oid})
        return True

    def _commit(self, repo: _Repo, revision: str, body: bytes) -> bool:
        hub = self.hub
        if hub.fail_commits > 0:
            hub.fail_commits -= 1
            raise _HttpError(hub.fail_status, f"LocalHub: simulated commit failure (HTTP {hub.fail_status})")
        if _is_true(self.query.get("create_pr", ["0"])[0]):
            raise _HttpError(400, "LocalHub does not support pull requests (create_pr)")
        if revision not in repo.branches:
            if repo.resolve(revision) is not None:
                raise _HttpError(400, f"Can only commit to a branch, not to {revision}")
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        head = repo.commits[repo.branches[revision]]
        try:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        except ValueError as exc:
            raise _HttpError(400, f"Invalid NDJSON commit payload: {exc}") from None
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if not header or not header.get("summary"):
            raise _HttpError(400, "The commit needs a header line with a summary")
        parent = header.get("parentCommit")
        if parent and not head.oid.startswith(parent):
            raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines:
            key, value = line.get("key"), line.get("value") or {}
            if key == "header":
                continue
            path = value.get("path", "")
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise _HttpError(400, f"Invalid path in commit: {path!r}")
            if key == "file":
                content = value.get("content", "")
                files[path] = (base64.b64decode(content) if value.get("encoding") == "base64"
                               else content.encode("utf-8"))
            elif key == "deletedFile":
                if path not in files:
                    raise _HttpError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                gone = [p for p in files if p.startswith(prefix)]
                if not gone:
                    raise _HttpError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del files[p]
            elif key == "lfsFile":
                raise _HttpError(422, f"LocalHub stores no LFS objects (preupload answers 'regular'): {path}")
            else:
                raise _HttpError(400, f"Unknown commit operation {key!r}")
        commit = hub._new_commit(repo, head, files, header["summary"], header.get("description") or "")
        repo.branches[revision] = commit.oid
        hub.commits.append((repo.repo_id, header["summary"]))
        self._json({"success": True, "commitOid": commit.oid,
                    "commitUrl": f"{hub.repo_url(repo.repo_type, repo.repo_id)}/commit/{commit.oid}",
                    "hookOutput": "", "pullRequestUrl": None})
        return True

    def _expand(self, repo: _Repo, commit: _Commit, entries: list, expand: bool) -> list:
        if expand:
            for entry in entries:
                entry["lastCommit"] = _last_commit(repo, commit, entry["path"], entry["type"] == "directory")
        return entries

    def _tree(self, repo: _Repo, commit: _Commit, path: str) -> bool:
        recursive = _is_true(self.query.get("recursive", ["false"])[0])
        entries = _tree_entries(commit.files, path, recursive)
        if entries is None:
            raise _HttpError(404, f"{path} does not exist on \"{commit.oid}\"", "EntryNotFound",
                             headers={"X-Repo-Commit": commit.oid})
        expand = _is_true(self.query.get("expand", ["false"])[0])
        self._json(self._expand(repo, commit, entries, expand))
        return True

    def _paths_info(self, repo: _Repo, commit: _Commit, body: bytes) -> bool:
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = json.loads(body or b"{}")
        else:  # the client posts a form: paths=a&paths=b&expand=false
            form = parse_qs(body.decode(), keep_blank_values=True)
            payload = {"paths": form.get("paths", []), "expand": form.get("expand", ["false"])[0]}
        paths = payload.get("paths") or []
        paths = [paths] if isinstance(paths, str) else paths
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                entries.append(_file_entry(path, commit.files[path]))
            elif path and any(p.startswith(path + "/") for p in commit.files):
                entries.append({"type": "directory", "oid": _dir_oid(commit.files, path + "/"), "size": 0,
                                "path": path})
        self._json(self._expand(repo, commit, entries, _is_true(payload.get("expand", False))))
        return True

    def _commits(self, repo: _Repo, commit: _Commit) -> bool:
        out = []
        while commit is not None:
            out.append({"id": commit.oid, "title": commit.title, "message": commit.message, "date": commit.date,
                        "authors": [{"user": self.hub.username, "avatar": None}]})
            commit = repo.commits[commit.parent] if commit.parent else None
        self._json(out)
        return True

    def _branch(self, method: str, repo: _Repo, branch: str, payload: dict) -> bool:
        if method == "DELETE":
            if branch not in repo.branches or branch == "main":
                raise _HttpError(404 if branch not in repo.branches else 403, f"Cannot delete branch {branch}",
                                 "RevisionNotFound" if branch not in repo.branches else None)
            del repo.branches[branch]
        else:
            if branch in repo.branches:
                raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = self._commit_of(repo, payload.get("startingPoint") or "main").oid
        self._send(200)
        return True

    def _resolve(self, commit: _Commit, path: str) -> bool:
        data = commit.files.get(path)
        if data is None:
            raise _HttpError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        headers = {"ETag": f'"{_git_blob_oid(data)}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes",
                   "Cache-Control": "no-cache"}
        status, start, end = 200, 0, len(data)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(len(data), int(match.group(2)) + 1) if match.group(2) else len(data)
            else:  # suffix range: the last N bytes
                start = max(0, len(data) - int(match.group(2)))
            if start >= len(data) and len(data) > 0:
                self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}", **headers})
                return True
            status = 206
            headers["Content-Range"] = f"bytes {start}-{max(start, end - 1)}/{len(data)}"
        self._send(status, data[start:end], content_type="application/octet-stream", headers=headers)
        return True


# ---------------------------------------------------------------------- client configuration


@contextlib.contextmanager
def hub_env(hub: LocalHub, token: str | None = "hf_localhub_test_token", cache_dir: str | os.PathLike | None = None):
    """Point huggingface_hub and transformers, in this process, at ``hub``; restore everything on exit.

    Environment: sets ``HF_ENDPOINT`` (the hub url) and ``HF_TOKEN`` (``token``; read by the client at call time);
    unsets ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE``; adds the hub host to ``NO_PROXY``/``no_proxy``; with
    ``cache_dir``, sets ``HF_HUB_CACHE``. Patched (constants are read once, at import):

    * ``huggingface_hub.constants``: ``ENDPOINT``, ``HUGGINGFACE_CO_URL_TEMPLATE`` (used by ``hf_hub_url``),
      ``HF_URL_HOSTS``, ``HF_HUB_OFFLINE = False`` (``is_offline_mode()``, which huggingface_hub and transformers
      both consult, returns it; the HTTP client refuses every request while it is True), and ``HF_HUB_CACHE`` when
      ``cache_dir`` is given (the default cache of ``hf_hub_download``, ``snapshot_download`` and transformers);
    * ``huggingface_hub.hf_api.api.endpoint``: the ``HfApi`` behind ``huggingface_hub.create_repo``,
      ``upload_folder``, ``whoami``, ... (built at import);
    * ``transformers.utils.hub._hf_api``: transformers' cached ``HfApi`` (``hf_api()``), reset to None so it is
      rebuilt on the local endpoint. Nothing else in transformers keeps an endpoint or offline flag of its own.

    An ``HfApi()`` built inside the block uses the local hub; one built before it keeps its own ``endpoint``.
    """
    from huggingface_hub import constants

    env_saved = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                "NO_PROXY", "no_proxy", "HF_HUB_CACHE")}
    patched: list = []  # (object, attribute, old value)

    def patch(obj, attr, value):
        patched.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    url = hub.url
    host = hub.host
    try:
        os.environ["HF_ENDPOINT"] = url
        if token is not None:
            os.environ["HF_TOKEN"] = token
        else:
            os.environ.pop("HF_TOKEN", None)
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("TRANSFORMERS_OFFLINE", None)
        for key in ("NO_PROXY", "no_proxy"):
            current = os.environ.get(key, "")
            if host not in current.split(","):
                os.environ[key] = f"{current},{host}" if current else host
        patch(constants, "ENDPOINT", url)
        patch(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        patch(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {host.lower()}))
        patch(constants, "HF_HUB_OFFLINE", False)
        if cache_dir is not None:
            os.environ["HF_HUB_CACHE"] = str(cache_dir)
            patch(constants, "HF_HUB_CACHE", str(cache_dir))
        hf_api_module = sys.modules.get("huggingface_hub.hf_api")
        api_endpoint_before = hf_api_module.api.endpoint if hf_api_module is not None else None
        if hf_api_module is not None:
            hf_api_module.api.endpoint = url
        tf_hub = sys.modules.get("transformers.utils.hub")
        tf_api_before = getattr(tf_hub, "_hf_api", None) if tf_hub is not None else None
        if tf_hub is not None:
            tf_hub._hf_api = None
        yield hub
    finally:
        for obj, attr, old in reversed(patched):
            setattr(obj, attr, old)
        for key, value in env_saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        hf_api_module = sys.modules.get("huggingface_hub.hf_api")
        if hf_api_module is not None and "api_endpoint_before" in locals():
            # imported inside the block: its module-level api was built on the local url => back to the default
            hf_api_module.api.endpoint = api_endpoint_before or constants.ENDPOINT
        tf_hub = sys.modules.get("transformers.utils.hub")
        if tf_hub is not None and "tf_api_before" in locals():
            tf_hub._hf_api = tf_api_before
