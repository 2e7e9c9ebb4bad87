"""Model names -> checksummed downloads (README 'Models'), against a real HTTP server on 127.0.0.1.

The server (a ``http.server`` in a thread, random port) serves a seeded random checkpoint and
logs every request; it can honour or ignore ``Range`` and can be told to close the connection
after N bytes. ``PERSAM_MODELS_FILE`` points the model name at it, ``PERSAM_HOME`` at a
temporary cache folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import sam_core
from sam_core import CheckpointError, DownloadError, build_sam
from sam_core.weights import OFFICIAL_MODELS, cached_path, model_entries, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]


class FileServer:
    """Serves ``files`` ({url path: bytes}); ``range_support`` and ``drop_after`` (once) as set."""

    def __init__(self, files: dict[str, bytes], range_support: bool = True) -> None:
        self.files = files
        self.range_support = range_support
        self.drop_after: int | None = None
        self.log: list[dict] = []  # one entry per request: path, range header, status, body bytes sent
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                data = server.files.get(self.path)
                entry = {"path": self.path, "range": self.headers.get("Range"), "status": 404, "sent": 0}
                server.log.append(entry)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if wanted and server.range_support:
                    start = int(wanted.group(1))
                    if start >= len(data):
                        entry["status"] = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    entry["status"] = 206
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    entry["status"] = 200
                    self.send_response(200)
                    if server.range_support:
                        self.send_header("Accept-Ranges", "bytes")
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None:
                    body = body[: server.drop_after]
                    server.drop_after = None
                    self.close_connection = True  # the client sees EOF before Content-Length
                self.wfile.write(body)
                self.wfile.flush()
                entry["sent"] = len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def payload(tmp_path_factory, small_checkpoint) -> bytes:
    return small_checkpoint.read_bytes()


@pytest.fixture
def server(payload):
    srv = FileServer({"/weights/tiny_sam.pth": payload})
    yield srv
    srv.close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh cache folder and models file; returns a function that writes entries."""
    home = tmp_path / "home"
    models_file = tmp_path / "models.json"
    monkeypatch.setenv("PERSAM_HOME", str(home))
    monkeypatch.setenv("PERSAM_MODELS_FILE", str(models_file))
    monkeypatch.delenv("PERSAM_OFFLINE", raising=False)

    def write(entries: dict) -> Path:
        models_file.write_text(json.dumps(entries))
        return home
    return write


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_entry(server: FileServer, payload: bytes, **over) -> dict:
    return {"tiny": {"url": server.url("/weights/tiny_sam.pth"), "sha256": sha(payload),
                     "bytes": len(payload), "model_type": "vit_b", **over}}


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def test_first_use_downloads_verifies_and_second_use_makes_no_request(server, payload, env, capsys):
    home = env(tiny_entry(server, payload))
    sam = build_sam("auto", "tiny")
    assert len(server.log) == 1 and server.log[0]["status"] == 200
    path = home / "tiny_sam.pth"
    assert path.read_bytes() == payload
    assert (home / "tiny_sam.pth.sha256").read_text().strip() == sha(payload)
    notice = capsys.readouterr().err
    assert "downloading tiny" in notice and server.url("/weights/tiny_sam.pth") in notice and str(path) in notice
    # Same weights as loading the file itself.
    reference = build_sam("auto", path).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in sam.state_dict().items())
    # Second use: from the cache, no request, no re-hash notice.
    assert resolve_checkpoint("tiny") == path
    build_sam("auto", "tiny")
    assert len(server.log) == 1
    assert "verifying" not in capsys.readouterr().err
    assert leftovers(home) == ["tiny_sam.pth", "tiny_sam.pth.sha256"]


def test_wrong_checksum_leaves_no_file_and_says_so(server, payload, env):
    wrong = sha(payload + b"x")
    home = env(tiny_entry(server, payload, sha256=wrong))
    with pytest.raises(DownloadError) as info:
        resolve_checkpoint("tiny")
    message = one_line(info.value)
    assert wrong in message and sha(payload) in message and "deleted" in message
    assert server.url("/weights/tiny_sam.pth") in message
    assert leftovers(home) == []
    # It is a CheckpointError too (one except clause for all checkpoint problems).
    assert isinstance(info.value, CheckpointError)


def test_dropped_connection_then_rerun_without_range_support(payload, env):
    server = FileServer({"/weights/tiny_sam.pth": payload}, range_support=False)
    try:
        home = env(tiny_entry(server, payload))
        server.drop_after = len(payload) // 2
        with pytest.raises(DownloadError) as info:
            resolve_checkpoint("tiny")
        message = one_line(info.value)
        assert "interrupted" in message and "run again" in message
        assert not (home / "tiny_sam.pth").exists()  # never a partial file under the final name
        # What arrived is kept (whole 1 MiB chunks: a chunk cut by the drop is not).
        kept = (home / "tiny_sam.pth.part").stat().st_size
        assert 0 < kept <= len(payload) // 2
        assert (home / "tiny_sam.pth.part").read_bytes() == payload[:kept]
        path = resolve_checkpoint("tiny")
        assert path.read_bytes() == payload
        # The rerun asked for the rest; this server ignores Range, so the file came again whole.
        assert [e["status"] for e in server.log] == [200, 200]
        assert server.log[1]["range"] == f"bytes={kept}-"
        assert leftovers(home) == ["tiny_sam.pth", "tiny_sam.pth.sha256"]
    finally:
        server.close()


def test_range_capable_server_resumes(server, payload, env):
    home = env(tiny_entry(server, payload))
    half = len(payload) // 3
    server.drop_after = half
    with pytest.raises(DownloadError, match="interrupted"):
        resolve_checkpoint("tiny")
    kept = (home / "tiny_sam.pth.part").stat().st_size
    assert 0 < kept <= half
    path = resolve_checkpoint("tiny")
    assert path.read_bytes() == payload
    assert [e["status"] for e in server.log] == [200, 206]
    assert server.log[1]["range"] == f"bytes={kept}-"
    assert server.log[1]["sent"] == len(payload) - kept  # only the rest crossed the wire
    assert leftovers(home) == ["tiny_sam.pth", "tiny_sam.pth.sha256"]


def test_corrupt_partial_file_fails_the_checksum_then_a_rerun_starts_clean(server, payload, env):
    home = env(tiny_entry(server, payload))
    home.mkdir(parents=True)
    (home / "tiny_sam.pth.part").write_bytes(b"\0" * 1000)  # not the start of the file
    with pytest.raises(DownloadError, match="deleted"):
        resolve_checkpoint("tiny")
    assert leftovers(home) == []
    assert resolve_checkpoint("tiny").read_bytes() == payload


def test_offline_names_the_url_and_the_path_and_sends_nothing(server, payload, env, monkeypatch):
    home = env(tiny_entry(server, payload))
    monkeypatch.setenv("PERSAM_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        build_sam("auto", "tiny")
    message = one_line(info.value)
    assert "PERSAM_OFFLINE=1" in message
    assert server.url("/weights/tiny_sam.pth") in message and str(home / "tiny_sam.pth") in message
    assert server.log == []


def test_no_connection_names_the_url_and_the_path(env, payload):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mobile_sam.pt"
    home = env({"vit_t": {"url": url, "sha256": sha(payload)}})
    with pytest.raises(DownloadError) as info:
        resolve_checkpoint("vit_t")
    message = one_line(info.value)
    assert url in message and str(home / "mobile_sam.pt") in message
    assert leftovers(home) == []


def test_http_error_is_one_line(server, payload, env):
    env({"gone": {"url": server.url("/nothing.pth"), "sha256": sha(payload)}})
    with pytest.raises(DownloadError, match="HTTP 404"):
        resolve_checkpoint("gone")
    env({"typo": {"url": "127.0.0.1/tiny_sam.pth", "sha256": sha(payload)}})  # no scheme
    with pytest.raises(DownloadError, match="MissingSchema") as info:
        resolve_checkpoint("typo")
    assert "SHA-256" not in str(info.value)  # not mistaken for a checksum failure


def test_file_put_in_the_cache_by_hand_is_verified_once(server, payload, env, monkeypatch, capsys):
    home = env(tiny_entry(server, payload))
    monkeypatch.setenv("PERSAM_OFFLINE", "1")  # proves no download is attempted
    home.mkdir(parents=True)
    (home / "tiny_sam.pth").write_bytes(payload)
    assert resolve_checkpoint("tiny") == home / "tiny_sam.pth"
    assert "verifying" in capsys.readouterr().err
    assert resolve_checkpoint("tiny") == home / "tiny_sam.pth"
    assert "verifying" not in capsys.readouterr().err
    assert server.log == []


def test_wrong_file_in_the_cache_is_replaced_by_a_fresh_download(server, payload, env, monkeypatch):
    home = env(tiny_entry(server, payload))
    home.mkdir(parents=True)
    (home / "tiny_sam.pth").write_bytes(b"not the model")
    monkeypatch.setenv("PERSAM_OFFLINE", "1")
    with pytest.raises(DownloadError, match="does not match the SHA-256"):
        resolve_checkpoint("tiny")
    monkeypatch.delenv("PERSAM_OFFLINE")
    assert resolve_checkpoint("tiny").read_bytes() == payload
    assert len(server.log) == 1


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not readable JSON"),
    ("[1, 2]", "JSON object"),
    ('{"x": {"url": "http://a/b.pth"}}', "'url' and 'sha256'"),
    ('{"x": {"url": "http://a/b.pth", "sha256": "abc"}}', "64 hex digits"),
])
def test_bad_models_file_is_one_line_naming_it(tmp_path, monkeypatch, content, fragment):
    models_file = tmp_path / "models.json"
    models_file.write_text(content)
    monkeypatch.setenv("PERSAM_MODELS_FILE", str(models_file))
    with pytest.raises(CheckpointError) as info:
        model_entries()
    message = one_line(info.value)
    assert fragment in message and str(models_file) in message


def test_official_table_is_spec_13():
    expected = {
        "vit_t": ("mobile_sam.pt", 40728226, "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"),
        "vit_b": ("sam_vit_b_01ec64.pth", 375042383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
        "vit_l": ("sam_vit_l_0b3195.pth", 1249524607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
        "vit_h": ("sam_vit_h_4b8939.pth", 2564550879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    }
    assert {n: (e.filename, e.bytes, e.sha256) for n, e in OFFICIAL_MODELS.items()} == expected
    assert OFFICIAL_MODELS["vit_t"].url == "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
    for name in ("vit_b", "vit_l", "vit_h"):
        assert OFFICIAL_MODELS[name].url == (
            "https://dl.fbaipublicfiles.com/segment_anything/" + expected[name][0])
    assert sam_core.DEFAULT_MODEL == "vit_t"


def test_models_file_overrides_an_official_name(server, payload, env):
    home = env({"vit_t": {"url": server.url("/weights/tiny_sam.pth"), "sha256": sha(payload)}})
    assert model_entries()["vit_t"].url.startswith("http://127.0.0.1:")
    assert resolve_checkpoint("vit_t") == home / "tiny_sam.pth"


def test_missing_path_is_still_not_found(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        build_sam("auto", tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="not found"):
        build_sam("auto", "no_such_model_name")


def test_cache_folder_defaults_to_the_user_cache(monkeypatch):
    import platformdirs

    monkeypatch.delenv("PERSAM_HOME", raising=False)
    assert cached_path(OFFICIAL_MODELS["vit_t"]) == Path(platformdirs.user_cache_dir("persam", appauthor=False)) / "mobile_sam.pt"


def _main(capsys, *args: str) -> tuple[int, str, str]:
    from persam.cli import main

    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _rows(listing: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in listing.splitlines()[1:] if line.strip()}


def test_cli_download_and_models(server, payload, env, capsys):
    home = env(tiny_entry(server, payload))
    status, out, _ = _main(capsys, "models")
    assert status == 0
    rows = _rows(out)
    assert set(rows) >= {"vit_t", "vit_b", "vit_l", "vit_h", "tiny"}
    assert "no" in rows["tiny"] and str(home / "mobile_sam.pt") in rows["vit_t"]
    status, out, err = _main(capsys, "download", "tiny")
    assert status == 0 and str(home / "tiny_sam.pth") in out and "downloading tiny" in err
    status, out, _ = _main(capsys, "download", "tiny")
    assert status == 0 and "already cached" in out
    assert len(server.log) == 1
    assert "yes" in _rows(_main(capsys, "models")[1])["tiny"]
    status, _, err = _main(capsys, "download", "vit_x")
    assert status == 1 and "unknown model name" in err


def test_cli_offline_error_is_one_line(tmp_path):
    """The real console entry point, in its own process: exit 1 and one line naming the file."""
    variables = {"PERSAM_HOME": str(tmp_path), "PERSAM_OFFLINE": "1",
                 "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))}
    done = subprocess.run([sys.executable, "-m", "persam", "download", "vit_h"], capture_output=True,
                          text=True, env={**os.environ, **variables}, cwd=ROOT, timeout=300)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "PERSAM_OFFLINE=1" in done.stderr and str(tmp_path / "sam_vit_h_4b8939.pth") in done.stderr
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in done.stderr


def test_checkpoint_option_defaults_to_vit_t():
    from persam.cli import build_parser

    args = build_parser().parse_args(["segment", "--ref-image", "a.png", "--ref-mask", "m.png",
                                      "--out", "o", "x.png"])
    assert args.checkpoint == "vit_t"
