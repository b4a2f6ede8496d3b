"""jobs/fetch_tags.py and musicrec.tagfetch, offline: pylast talks to a fake Last.fm on 127.0.0.1.

The fake answers ``track.getInfo`` (what ``get_track_by_mbid`` calls) and ``track.getTopTags`` in the Last.fm API's
XML format and logs every request, so the tests can assert on what was (not) asked: not-found tracks are not asked
twice, a resumed run asks only for the rest, the rate limit spaces requests, and the API key reaches the server but
nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from musicrec.tagfetch import (
    API_KEY_ENV,
    FetchAborted,
    FetchConfig,
    RateLimiter,
    TagCache,
    fetch_tags,
    iter_cache,
    read_track_mbids,
    write_tags_file,
)

REPO = Path(__file__).resolve().parent.parent
JOB = REPO / "jobs" / "fetch_tags.py"
API_KEY = "k3y-DO-NOT-LEAK-5a1f9e"

MBID_BELIEVE = "5ad3a2a3-4bd4-4b3a-9f6c-1b0f2c1a0001"
MBID_CREEP = "5ad3a2a3-4bd4-4b3a-9f6c-1b0f2c1a0002"
MBID_ODD = "5ad3a2a3-4bd4-4b3a-9f6c-1b0f2c1a0003"
MBID_UNKNOWN = "5ad3a2a3-4bd4-4b3a-9f6c-1b0f2c1a0404"
MBID_NO_TAGS = "5ad3a2a3-4bd4-4b3a-9f6c-1b0f2c1a0005"

# mbid -> (artist, title, [(tag, count), ...] in Last.fm's order: descending count)
CATALOG = {
    MBID_BELIEVE: ("Cher", "Believe", [("pop", 100), ("dance", 61), ("90s", 40), ("female vocalists", 33)]),
    MBID_CREEP: ("Radiohead", "Creep", [("alternative", 100), ("rock", 97), ("grunge", 12)]),
    # names that need XML escaping and a tab / newline inside a tag name
    MBID_ODD: ("Simon & Garfunkel", "Mrs. Robinson", [("folk", 100), ("rock & roll", 50), ("60s\tclassic", 20),
                                                      ("two\nlines", 10)]),
    MBID_NO_TAGS: ("Nobody", "Silence", []),
}


def make_plays(path: Path, mbids: list[str]) -> Path:
    """A plays TSV in the Last.fm 1K format (no header, 6 fields) with repeats and a play without track id."""
    lines = []
    for i, mbid in enumerate(mbids * 2):
        lines.append(f"user_{i % 3:06d}\t2009-05-04T23:08:{i % 60:02d}Z\tartist-mbid\tSome \"Artist\"\t{mbid}\tA track")
    lines.append("user_000001\t2009-05-04T23:09:00Z\t\tUnknown\t\tNo id")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------------
# The fake Last.fm web service
# ----------------------------------------------------------------------------------------------------------------
def _xml_ok(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<lfm status="ok">\n{body}\n</lfm>\n'


def _xml_error(code: int, message: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<lfm status="failed">\n<error code="{code}">{message}</error>\n</lfm>\n'


def _track_info_xml(mbid: str, artist: str, title: str) -> str:
    a, t = escape(artist), escape(title)
    return _xml_ok(
        f"<track><id>1</id><name>{t}</name><mbid>{mbid}</mbid>"
        f"<url>https://www.last.fm/music/{a}/_/{t}</url><duration>238000</duration>"
        f'<streamable fulltrack="0">0</streamable><listeners>1000</listeners><playcount>5000</playcount>'
        f"<artist><name>{a}</name><mbid></mbid><url>https://www.last.fm/music/{a}</url></artist>"
        f'<album position="1"><artist>{a}</artist><title>{t}</title><mbid></mbid></album>'
        f"<toptags><tag><name>ignored</name><url>https://www.last.fm/tag/ignored</url></tag></toptags></track>"
    )


def _top_tags_xml(artist: str, title: str, tags: list[tuple[str, int]]) -> str:
    rows = "".join(
        f"<tag><name>{escape(name).replace(chr(9), '&#9;').replace(chr(10), '&#10;')}</name><count>{count}</count>"
        f"<url>https://www.last.fm/tag/{escape(name)}</url></tag>"
        for name, count in tags
    )
    return _xml_ok(f'<toptags artist="{escape(artist)}" track="{escape(title)}">{rows}</toptags>')


class FakeLastFM:
    """Records each request as a dict of its form fields plus ``_t`` (arrival time, monotonic)."""

    def __init__(self) -> None:
        self.catalog = dict(CATALOG)
        self.requests: list[dict] = []
        self.failures: dict[str, list] = {}  # mbid -> responses to give track.getInfo first: 503 or Last.fm codes
        self.hold_top_tags_after: int | None = None  # hold the next track.getTopTags after this many
        self.held = threading.Event()  # set when a request is being held
        self.release = threading.Event()
        self._n_top_tags = 0
        self._lock = threading.Lock()

    def info_mbids(self) -> list[str]:
        return [r["mbid"] for r in self.requests if r.get("method") == "track.getInfo"]

    def respond(self, params: dict) -> tuple[int, str]:
        with self._lock:
            self.requests.append(params | {"_t": time.monotonic()})
        method = params.get("method")
        if method == "track.getInfo":
            mbid = params.get("mbid", "")
            pending = self.failures.get(mbid)
            if pending:
                failure = pending.pop(0)
                if failure == 503:
                    return 503, "<html>Service Unavailable</html>"
                return 200, _xml_error(failure, "Rate limit exceeded" if failure == 29 else "Error")
            if mbid not in self.catalog:
                return 200, _xml_error(6, "Track not found")
            artist, title, _ = self.catalog[mbid]
            return 200, _track_info_xml(mbid, artist, title)
        if method == "track.getTopTags":
            with self._lock:
                hold = self.hold_top_tags_after is not None and self._n_top_tags >= self.hold_top_tags_after
                self._n_top_tags += 1
            if hold:
                self.held.set()
                self.release.wait(timeout=20)
            for artist, title, tags in self.catalog.values():
                if (artist, title) == (params.get("artist"), params.get("track")):
                    return 200, _top_tags_xml(artist, title, tags)
            return 200, _xml_error(6, "Track not found")
        return 200, _xml_error(3, "Invalid Method - No method with that name in this package")


@pytest.fixture
def lastfm():
    """(FakeLastFM, api_root) served from a thread on 127.0.0.1 with an OS-chosen port."""
    fake = FakeLastFM()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8")
            params = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
            status, text = fake.respond(params)
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep the test output quiet
            pass

    class QuietServer(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):  # a client killed mid-request (the resume test)
            pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}/2.0/"
    fake.release.set()
    server.shutdown()
    server.server_close()


def fast_config(**overrides) -> FetchConfig:
    settings = dict(max_rps=1000.0, backoff_s=0.01, max_retries=2, progress=False)
    return FetchConfig(**(settings | overrides))


def read_tags(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def run_job(args: list[str], api_key: str | None = API_KEY, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    if api_key is not None:
        env[API_KEY_ENV] = api_key
    return subprocess.run(
        [sys.executable, str(JOB), *args], env=env, capture_output=True, text=True, timeout=60, **kwargs
    )


# ----------------------------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_read_track_mbids_distinct_in_order_skips_empty_and_malformed(tmp_path):
    plays = tmp_path / "plays.tsv"
    plays.write_text(
        "u1\t2009-05-04T23:08:57Z\ta1\tDeep Dish\tb-1\tFuck Me Im Famous\r\n"
        'u1\t2009-05-04T13:54:10Z\ta2\t"Weird Al"\t\tNo track id\n'  # empty track id (None case)
        "u2\t2009-05-04T13:52:04Z\ta3\tOther\tb-2\tSecond\n"
        "u2\t2009-05-04T13:42:52Z\ta1\tDeep Dish\tb-1\tAgain\n"
        "garbage line without tabs\n"
        "u3\t2009-05-04T13:40:00Z\ta4\tX\t b-3 \tName\twith a tab\n",  # 7 fields: id still field 5
        encoding="utf-8",
    )
    mbids, scan = read_track_mbids(plays)
    assert mbids == ["b-1", "b-2", "b-3"]
    assert (scan.n_lines, scan.n_malformed, scan.n_without_track_id) == (6, 1, 1)


@pytest.mark.unit
def test_rate_limiter_spaces_calls_without_bursts():
    now = [100.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    times = []
    for _ in range(5):
        limiter.wait()
        times.append(now[0])
    assert [round(b - a, 9) for a, b in zip(times, times[1:])] == [0.25] * 4
    now[0] += 10  # idle time does not build up credit for a burst
    limiter.wait()
    limiter.wait()
    assert sleeps[-1] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        RateLimiter(0)


@pytest.mark.unit
def test_write_tags_file_format_order_cleaning_and_partial_cache_line(tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    with TagCache(cache_path) as cache:
        cache.add_tags("t1", [["rock", 50], ["indie", 90], ["a\tb\nc", 70], ["", 5], ["x", 10]])
        cache.add_not_found("t2")
        cache.add_tags("t3", [])
        cache.add_tags("t4", [["jazz", 1]])  # not in the plays: not written
    with open(cache_path, "a", encoding="utf-8") as f:
        f.write('{"traid": "t5", "tags": [["cut sh')  # a run killed mid-write
    assert [r["traid"] for r in iter_cache(cache_path)] == ["t1", "t2", "t3", "t4"]
    with TagCache(cache_path) as cache:  # reopening starts a fresh line after the partial one
        cache.add_tags("t5", [["ok", 3]])
    assert [r["traid"] for r in iter_cache(cache_path)][-1] == "t5"

    out = tmp_path / "tags" / "track-tags.tsv"
    n_tracks, n_rows = write_tags_file(cache_path, {"t1", "t2", "t3", "t5"}, out, top_k=3)
    assert read_tags(out) == [
        ["traid", "tag", "count"],
        ["t1", "indie", "90"],
        ["t1", "a b c", "70"],
        ["t1", "rock", "50"],
        ["t5", "ok", "3"],
    ]
    assert (n_tracks, n_rows) == (2, 4)
    assert sorted(p.name for p in out.parent.iterdir()) == ["track-tags.tsv"]  # no temp file left


# ----------------------------------------------------------------------------------------------------------------
# Against the fake Last.fm, in process
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_fetch_writes_tags_caches_not_found_and_rerun_asks_nothing(lastfm, tmp_path):
    fake, api_root = lastfm
    plays = make_plays(tmp_path / "plays.tsv", [MBID_BELIEVE, MBID_UNKNOWN, MBID_ODD, MBID_NO_TAGS, MBID_CREEP])
    out, cache = tmp_path / "track-tags.tsv", tmp_path / "cache.jsonl"

    summary = fetch_tags(plays, out, cache, API_KEY, api_root=api_root, config=fast_config(top_k=3))

    assert (summary.n_tracks, summary.n_fetched, summary.n_not_found, summary.n_failed) == (5, 5, 1, 0)
    assert summary.n_requests == 9  # 2 per known track, 1 for the unknown one
    assert read_tags(out) == [
        ["traid", "tag", "count"],
        [MBID_BELIEVE, "pop", "100"],
        [MBID_BELIEVE, "dance", "61"],
        [MBID_BELIEVE, "90s", "40"],
        [MBID_ODD, "folk", "100"],
        [MBID_ODD, "rock & roll", "50"],
        [MBID_ODD, "60s classic", "20"],
        [MBID_CREEP, "alternative", "100"],
        [MBID_CREEP, "rock", "97"],
        [MBID_CREEP, "grunge", "12"],
    ]
    records = {r["traid"]: r for r in iter_cache(cache)}
    assert records[MBID_UNKNOWN] == {"traid": MBID_UNKNOWN, "error": "not found"}
    assert records[MBID_NO_TAGS] == {"traid": MBID_NO_TAGS, "tags": []}
    assert records[MBID_ODD]["tags"][2] == ["60s\tclassic", 20]  # cached as Last.fm sent it, cleaned on output
    top_tags = [r for r in fake.requests if r["method"] == "track.getTopTags"]
    assert {(r["artist"], r["track"]) for r in top_tags} == {("Cher", "Believe"), ("Radiohead", "Creep"),
                                                            ("Simon & Garfunkel", "Mrs. Robinson"),
                                                            ("Nobody", "Silence")}
    assert all(r["api_key"] == API_KEY for r in fake.requests)

    n_before = len(fake.requests)
    again = fetch_tags(plays, out, cache, API_KEY, api_root=api_root, config=fast_config(top_k=3))
    assert len(fake.requests) == n_before  # everything, the not-found track included, came from the cache
    assert (again.n_cached_before, again.n_fetched, again.n_remaining) == (5, 0, 0)


@pytest.mark.unit
def test_transient_errors_are_retried_then_left_for_the_next_run(lastfm, tmp_path):
    fake, api_root = lastfm
    plays = make_plays(tmp_path / "plays.tsv", [MBID_BELIEVE, MBID_CREEP])
    out, cache = tmp_path / "track-tags.tsv", tmp_path / "cache.jsonl"
    fake.failures = {MBID_BELIEVE: [503, 29], MBID_CREEP: [29, 29, 29]}  # 3 failures > max_retries=2

    summary = fetch_tags(plays, out, cache, API_KEY, api_root=api_root, config=fast_config(max_retries=2))

    assert fake.info_mbids() == [MBID_BELIEVE] * 3 + [MBID_CREEP] * 3
    assert (summary.n_fetched, summary.n_failed, summary.n_remaining) == (1, 1, 1)
    assert [r["traid"] for r in iter_cache(cache)] == [MBID_BELIEVE]  # the failed track is not cached

    fake.requests.clear()
    summary = fetch_tags(plays, out, cache, API_KEY, api_root=api_root, config=fast_config(max_retries=2))
    assert fake.info_mbids() == [MBID_CREEP]  # only the failed one is asked again, and now succeeds
    assert (summary.n_fetched, summary.n_failed, summary.n_remaining) == (1, 0, 0)
    assert {row[0] for row in read_tags(out)[1:]} == {MBID_BELIEVE, MBID_CREEP}


@pytest.mark.unit
def test_rejected_api_key_aborts_without_caching_or_output(lastfm, tmp_path):
    fake, api_root = lastfm
    plays = make_plays(tmp_path / "plays.tsv", [MBID_BELIEVE, MBID_CREEP])
    out, cache = tmp_path / "track-tags.tsv", tmp_path / "cache.jsonl"
    fake.failures = {MBID_BELIEVE: [10]}  # Invalid API key

    with pytest.raises(FetchAborted):
        fetch_tags(plays, out, cache, API_KEY, api_root=api_root, config=fast_config())
    assert fake.info_mbids() == [MBID_BELIEVE]  # not retried, nothing else asked
    assert not out.exists()
    assert list(iter_cache(cache)) == []


@pytest.mark.unit
def test_rate_limit_is_respected(lastfm, tmp_path):
    fake, api_root = lastfm
    extra = MBID_BELIEVE.replace("0001", "0009")
    fake.catalog[extra] = ("Cher", "Strong Enough", [("pop", 100)])  # a fifth known track
    plays = make_plays(tmp_path / "plays.tsv", [MBID_BELIEVE, MBID_CREEP, MBID_ODD, MBID_NO_TAGS, extra])
    started = time.monotonic()
    summary = fetch_tags(
        plays, tmp_path / "t.tsv", tmp_path / "c.jsonl", API_KEY, api_root=api_root, config=fast_config(max_rps=20)
    )
    elapsed = time.monotonic() - started
    assert summary.n_requests == len(fake.requests) == 10
    assert elapsed >= 0.45  # 10 requests at 20/s: 9 gaps of 0.05 s
    arrivals = [r["_t"] for r in fake.requests]
    assert arrivals[-1] - arrivals[0] >= 0.40  # as seen by the server (allowing for jitter)


# ----------------------------------------------------------------------------------------------------------------
# The CLI, as a subprocess
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_cli_limit_then_resume_and_key_never_leaks(lastfm, tmp_path):
    fake, api_root = lastfm
    order = [MBID_UNKNOWN, MBID_BELIEVE, MBID_ODD, MBID_NO_TAGS, MBID_CREEP]
    plays = make_plays(tmp_path / "plays.tsv", order)
    out, cache = tmp_path / "out" / "track-tags.tsv", tmp_path / "cache.jsonl"
    args = ["--plays", str(plays), "--out", str(out), "--cache", str(cache), "--max-rps", "1000",
            "--api-root", api_root, "--top-k", "2"]

    first = run_job(args + ["--limit", "2"])
    assert first.returncode == 0, first.stderr
    assert fake.info_mbids() == order[:2]
    assert [row[0] for row in read_tags(out)[1:]] == [MBID_BELIEVE, MBID_BELIEVE]  # partial file already usable

    fake.requests.clear()
    second = run_job(args)
    assert second.returncode == 0, second.stderr
    assert fake.info_mbids() == order[2:]  # the not-found and the fetched track are not asked again
    assert read_tags(out) == [
        ["traid", "tag", "count"],
        [MBID_BELIEVE, "pop", "100"],
        [MBID_BELIEVE, "dance", "61"],
        [MBID_ODD, "folk", "100"],
        [MBID_ODD, "rock & roll", "50"],
        [MBID_CREEP, "alternative", "100"],
        [MBID_CREEP, "rock", "97"],
    ]
    summary = json.loads(second.stdout[second.stdout.index("{\n"):])
    assert (summary["n_tracks"], summary["n_cached_before"], summary["n_remaining"]) == (5, 2, 0)
    assert "fetch_tags" in second.stderr and "5/5" in second.stderr  # tqdm progress: done/total

    assert all(r["api_key"] == API_KEY for r in fake.requests)  # the key does reach the API ...
    for text in (first.stdout, first.stderr, second.stdout, second.stderr,
                 out.read_text(encoding="utf-8"), cache.read_text(encoding="utf-8")):
        assert API_KEY not in text  # ... and nothing else


@pytest.mark.e2e
def test_cli_killed_mid_run_resumes_with_only_the_rest(lastfm, tmp_path):
    fake, api_root = lastfm
    order = [MBID_BELIEVE, MBID_UNKNOWN, MBID_CREEP, MBID_ODD, MBID_NO_TAGS]
    plays = make_plays(tmp_path / "plays.tsv", order)
    out, cache = tmp_path / "track-tags.tsv", tmp_path / "cache.jsonl"
    args = ["--plays", str(plays), "--out", str(out), "--cache", str(cache), "--max-rps", "1000",
            "--api-root", api_root, "--no-progress"]
    fake.hold_top_tags_after = 2  # Believe and Creep get their tags; the run hangs on Mrs. Robinson's

    env = os.environ | {API_KEY_ENV: API_KEY}
    proc = subprocess.Popen([sys.executable, str(JOB), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert fake.held.wait(timeout=20), "the job never reached the held request"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert [r["traid"] for r in iter_cache(cache)] == [MBID_BELIEVE, MBID_UNKNOWN, MBID_CREEP]

    fake.hold_top_tags_after = None
    fake.release.set()
    fake.requests.clear()
    rerun = run_job(args)
    assert rerun.returncode == 0, rerun.stderr
    assert fake.info_mbids() == [MBID_ODD, MBID_NO_TAGS]
    assert [row[0] for row in read_tags(out)[1:]] == [MBID_BELIEVE] * 4 + [MBID_CREEP] * 3 + [MBID_ODD] * 4


@pytest.mark.e2e
def test_cli_without_api_key_exits_2_and_help_works(tmp_path):
    plays = make_plays(tmp_path / "plays.tsv", [MBID_BELIEVE])
    result = run_job(["--plays", str(plays), "--out", str(tmp_path / "t.tsv")], api_key=None)
    assert result.returncode == 2
    assert API_KEY_ENV in result.stderr
    assert not (tmp_path / "t.tsv").exists()

    help_text = run_job(["--help"], api_key=None)
    assert help_text.returncode == 0
    for flag in ("--plays", "--out", "--cache", "--top-k", "--max-rps", "--limit", "--api-root", API_KEY_ENV):
        assert flag in help_text.stdout


@pytest.mark.unit
def test_cleartext_warning_only_for_plain_http_to_another_machine():
    from musicrec.tagfetch import cleartext_warning

    assert cleartext_warning("https://ws.audioscrobbler.com/2.0/") is None
    for local in ("http://127.0.0.1:8080/2.0/", "http://localhost/2.0/", "http://[::1]:9/"):
        assert cleartext_warning(local) is None, local
    warning = cleartext_warning("http://mirror.example.org/2.0/")
    assert warning and "plain http" in warning and "unencrypted" in warning
