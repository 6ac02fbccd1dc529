"""xtrans.recipes.download against a loopback HTTP server (127.0.0.1, port 0) that honours Range
requests: checksums (a corrupt archive is caught and moved aside), resume from a .part file
(the server sees the Range request), servers that ignore Range or drop the connection, safe tar
extraction, the CLI, and LibriSpeech part download + extraction."""

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from xtrans.bin.download import main as download_main
from xtrans.recipes import librispeech
from xtrans.recipes.download import (ChecksumError, DownloadError, UnsafeArchiveError, download, extract_tar,
                                     verify_checksum)


class Server:
    """Serves ``files`` (path -> bytes); records each request's Range header in ``requests``.
    Paths listed in ``ignore_range`` answer 200 to Range requests; in ``drop_after`` they send
    the full Content-Length but close the connection after that many bytes."""

    def __init__(self):
        self.files, self.requests, self.ignore_range, self.drop_after = {}, [], set(), {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and self.path not in server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.drop_after:
                    self.wfile.write(body[:server.drop_after.pop(self.path)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def make_tar(members):
    """A .tar.gz (bytes) of name -> bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB


def test_download_md5_and_already_there(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    dest = download(server.url + "/a.bin", tmp_path / "sub" / "a.bin", md5=md5, progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "sub" / "a.bin.part").exists()
    n = len(server.requests)
    download(server.url + "/a.bin", dest, md5=md5.upper(), progress=False)  # verified, not fetched
    assert len(server.requests) == n


def test_corrupt_archive_caught_by_checksum(server, tmp_path):
    good = make_tar({"x/one.txt": b"1" * 1000})
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    server.files["/c.tar.gz"] = bytes(bad)
    sha = hashlib.sha256(good).hexdigest()
    dest = tmp_path / "c.tar.gz"
    with pytest.raises(ChecksumError, match=r"sha256 checksum mismatch .*moved it to .*c\.tar\.gz\.corrupt") as err:
        download(server.url + "/c.tar.gz", dest, sha256=sha, progress=False)
    assert err.value.expected == sha and err.value.found == hashlib.sha256(bad).hexdigest()
    assert not dest.exists() and not (tmp_path / "c.tar.gz.part").exists()
    assert (tmp_path / "c.tar.gz.corrupt").read_bytes() == bytes(bad)
    # an existing file that went bad is caught too
    dest.write_bytes(bytes(bad))
    with pytest.raises(ChecksumError, match="corrupt or incomplete"):
        download(server.url + "/c.tar.gz", dest, sha256=sha, progress=False)
    assert not dest.exists()


def test_resume_from_part_file(server, tmp_path):
    server.files["/big.bin"] = PAYLOAD
    dest = tmp_path / "big.bin"
    half = len(PAYLOAD) // 2
    (tmp_path / "big.bin.part").write_bytes(PAYLOAD[:half])
    download(server.url + "/big.bin", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert server.requests == [("/big.bin", f"bytes={half}-")]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == hashlib.sha256(PAYLOAD).hexdigest()


def test_complete_part_file_gets_416_and_is_verified(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    download(server.url + "/f.bin", tmp_path / "f.bin", md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts(server, tmp_path):
    server.files["/r.bin"] = PAYLOAD
    server.ignore_range.add("/r.bin")
    (tmp_path / "r.bin.part").write_bytes(b"garbage that must not stay in front")
    download(server.url + "/r.bin", tmp_path / "r.bin", md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert (tmp_path / "r.bin").read_bytes() == PAYLOAD


def test_dropped_connection_then_resume(server, tmp_path):
    server.files["/d.bin"] = PAYLOAD
    server.drop_after["/d.bin"] = 300_000
    dest = tmp_path / "d.bin"
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    with pytest.raises(DownloadError):
        download(server.url + "/d.bin", dest, md5=md5, retries=0, timeout=5, progress=False)
    part = tmp_path / "d.bin.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)
    size = part.stat().st_size
    download(server.url + "/d.bin", dest, md5=md5, retries=0, timeout=5, progress=False)
    assert server.requests[-1] == ("/d.bin", f"bytes={size}-")
    assert dest.read_bytes() == PAYLOAD


def test_http_errors_and_bad_arguments(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url + "/missing", tmp_path / "m", retries=3, retry_wait=10, progress=False)
    assert len(server.requests) == 1  # a 404 is not retried
    with pytest.raises(ValueError, match="url: expected an http"):
        download("ftp://example/x", tmp_path / "x")
    with pytest.raises(ValueError, match="md5: expected 32 hex digits"):
        download(server.url + "/x", tmp_path / "x", md5="abc")
    with pytest.raises(ValueError, match="not both"):
        verify_checksum(tmp_path, md5="0" * 32, sha256="0" * 64)


def test_extract_tar_safe(tmp_path):
    good = tmp_path / "good.tar.gz"
    good.write_bytes(make_tar({"top/a.txt": b"A", "top/sub/b.txt": b"B"}))
    out = extract_tar(good, tmp_path / "out", progress=False)
    assert (out / "top" / "sub" / "b.txt").read_bytes() == b"B"
    (out / "top" / "a.txt").unlink()
    extract_tar(good, out, progress=False)  # marker: not extracted again
    assert not (out / "top" / "a.txt").exists()

    for name, members in [("up", {"ok.txt": b"1", "../evil.txt": b"x"}), ("abs", {"/tmp/evil.txt": b"x"})]:
        path = tmp_path / f"{name}.tar.gz"
        path.write_bytes(make_tar(members))
        with pytest.raises(UnsafeArchiveError, match="refusing to extract"):
            extract_tar(path, tmp_path / f"out_{name}", progress=False)
        assert not (tmp_path / "evil.txt").exists() and not (tmp_path / f"out_{name}" / "ok.txt").exists()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(link)
    (tmp_path / "link.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="outside the folder"):
        extract_tar(tmp_path / "link.tar.gz", tmp_path / "out_link", progress=False)


def test_cli_download_and_extract(server, tmp_path, capsys):
    archive = make_tar({"pkg/file.txt": b"hello"})
    server.files["/pkg.tar.gz"] = archive
    rc = download_main([server.url + "/pkg.tar.gz", "--out", str(tmp_path / "pkg.tar.gz"), "--md5",
                        hashlib.md5(archive).hexdigest(), "--extract", str(tmp_path / "x"), "--no_progress"])
    assert rc == 0 and (tmp_path / "x" / "pkg" / "file.txt").read_bytes() == b"hello"
    rc = download_main([server.url + "/pkg.tar.gz", "--out", str(tmp_path / "bad.tar.gz"), "--md5", "0" * 32,
                        "--no_progress"])
    assert rc == 1 and "md5 checksum mismatch" in capsys.readouterr().err


def test_librispeech_parts_download_and_extract(server, tmp_path, monkeypatch):
    archive = make_tar({"LibriSpeech/dev-clean/1/2/1-2.trans.txt": b"1-2-0000 HELLO\n",
                        "LibriSpeech/dev-clean/1/2/1-2-0000.flac": b"not really flac"})
    server.files["/12/dev-clean.tar.gz"] = archive
    monkeypatch.setitem(librispeech.PARTS, "dev-clean", hashlib.md5(archive).hexdigest())
    rc = download_main(["--corpus", "librispeech", "--parts", "dev-clean", "--dest", str(tmp_path),
                        "--base_url", server.url + "/12", "--no_progress"])
    assert rc == 0
    assert (tmp_path / "LibriSpeech" / "dev-clean" / "1" / "2" / "1-2.trans.txt").is_file()
    n = len(server.requests)
    librispeech.download_parts("dev-clean", tmp_path, server.url + "/12", progress=False)  # done already
    assert len(server.requests) == n
    with pytest.raises(ValueError, match="unknown LibriSpeech part 'dev-cleen'"):
        librispeech.download_parts("dev-cleen", tmp_path)


def test_published_md5_table():
    assert set(librispeech.PARTS) == {"train-clean-100", "train-clean-360", "train-other-500", "dev-clean",
                                      "dev-other", "test-clean", "test-other"}
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in librispeech.PARTS.values())
    assert librispeech.PARTS["dev-clean"] == "42e2234ba48799c1f50f24a7926300a1"
