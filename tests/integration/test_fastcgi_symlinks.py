"""FastCGI routes and symlinks (follow_symlinks): by default a link under root is
followed wherever it points, as nginx's disable_symlinks off; with follow_symlinks: false
a script whose real path is outside root's real path is refused with 403, links that
stay inside root still work. Against the real php-fpm (see test_fastcgi.py)."""
import os
import re

import pytest

from test_fastcgi import FPM, Fpm, config, request, run_check

pytestmark = pytest.mark.skipif(not os.path.exists(FPM), reason="php-fpm8.2 is not installed")


@pytest.fixture
def fpm(tmp_path):
    f = Fpm(tmp_path).start()
    yield f
    f.stop()


@pytest.fixture
def tree(fpm, tmp_path):
    """www/ (fpm.www) with links in and out of it; outside/ beside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.php").write_text("<?php echo 'OUTSIDE';")
    (outside / "index.php").write_text("<?php echo 'OUTSIDE INDEX';")
    www = fpm.www
    (www / "ok.php").write_text("<?php echo 'ok';")
    (www / "sub").mkdir()
    (www / "sub" / "y.php").write_text("<?php echo 'sub y';")
    os.symlink(outside / "x.php", www / "evil.php")      # a file link out of root
    os.symlink(outside, www / "linkdir")                  # a directory link out of root
    os.symlink("ok.php", www / "inner.php")               # a relative link inside root
    os.symlink(www / "sub", www / "indir")                # a directory link inside root
    os.symlink("../www/../outside/x.php", www / "sneaky.php")  # climbs out by "../"
    os.symlink(tmp_path / "nowhere.php", www / "dangling.php")
    return www, outside


def test_default_follows_links_out_of_root(bulwark, fpm, tree):
    """The default (true, as nginx's): a link under root runs what it points to."""
    b = bulwark(config(f"unix:{fpm.sock}", fpm.www))
    r = request(b.port, "GET", "/evil.php")
    assert (r.status, r.body) == (200, b"OUTSIDE"), r
    r = request(b.port, "GET", "/linkdir/x.php")
    assert (r.status, r.body) == (200, b"OUTSIDE"), r


def test_links_out_of_root_are_refused(bulwark, fpm, tree):
    www, outside = tree
    b = bulwark(config(f"unix:{fpm.sock}", www, route_extra="    follow_symlinks: false\n"))
    for target in ("/evil.php", "/linkdir/x.php", "/linkdir/", "/sneaky.php",
                   "/evil.php/path/info"):
        r = request(b.port, "GET", target)
        assert r.status == 403, (target, r)
        assert "error=http_request_denied" in r.header("Proxy-Status"), (target, r)
        assert b"OUTSIDE" not in r.body, target
        # the real path is in the log, never in the answer
        assert str(outside).encode() not in r.body, target
    b.wait_log(rf"refused request .* with 403: script {re.escape(str(www))}/evil\.php resolves "
               rf"to {re.escape(str(outside))}/x\.php, outside root {re.escape(str(www))} "
               r"\(follow_symlinks: false\)")
    # links that stay inside root, and plain files, still run
    for target, body in (("/ok.php", b"ok"), ("/inner.php", b"ok"), ("/indir/y.php", b"sub y"),
                         ("/sub/y.php", b"sub y")):
        r = request(b.port, "GET", target)
        assert (r.status, r.body) == (200, body), (target, r)
    # a link to nothing is a missing script, as before
    r = request(b.port, "GET", "/dangling.php")
    assert r.status == 404 and "error=destination_not_found" in r.header("Proxy-Status"), r


def test_root_that_is_itself_a_link(bulwark, fpm, tree, tmp_path):
    """root is compared by its real path too: a deploy's current -> releases/1 works,
    and a link from inside the release back out of it is still refused."""
    release = tmp_path / "releases" / "1"
    release.mkdir(parents=True)
    (release / "app.php").write_text("<?php echo 'release 1';")
    os.symlink(tmp_path / "outside" / "x.php", release / "evil.php")
    current = tmp_path / "current"
    os.symlink(release, current)
    b = bulwark(config(f"unix:{fpm.sock}", current, route_extra="    follow_symlinks: false\n"))
    r = request(b.port, "GET", "/app.php")
    assert (r.status, r.body) == (200, b"release 1"), r
    r = request(b.port, "GET", "/evil.php")
    assert r.status == 403 and b"OUTSIDE" not in r.body, r


def test_a_link_swapped_in_after_start_is_refused(bulwark, fpm, tree):
    """Resolved per request, not once at start: a file replaced by a link later is refused."""
    www, outside = tree
    b = bulwark(config(f"unix:{fpm.sock}", www, route_extra="    follow_symlinks: false\n"))
    (www / "later.php").write_text("<?php echo 'plain';")
    r = request(b.port, "GET", "/later.php")
    assert (r.status, r.body) == (200, b"plain"), r
    os.unlink(www / "later.php")
    os.symlink(outside / "x.php", www / "later.php")
    r = request(b.port, "GET", "/later.php")
    assert r.status == 403 and b"OUTSIDE" not in r.body, r


def test_follow_symlinks_config_errors(tmp_path):
    text = ('listen: ["127.0.0.1:8080"]\n'                        # 1
            "upstreams:\n"                                         # 2
            "  php:\n"                                             # 3
            "    protocol: fastcgi\n"                              # 4
            '    servers: ["unix:/run/php.sock"]\n'                # 5
            "  app:\n"                                             # 6
            '    servers: ["127.0.0.1:9000"]\n'                    # 7
            "routes:\n"                                            # 8
            "  - upstream: php\n"                                  # 9
            "    root: /var/www\n"                                 # 10
            "    check_script: false\n"                            # 11
            "    follow_symlinks: false\n"                         # 12
            "  - upstream: php\n"                                  # 13
            "    match: {path: /b/}\n"                             # 14
            "    root: /var/www\n"                                 # 15
            "    follow_symlinks: sometimes\n"                     # 16
            "  - upstream: app\n"                                  # 17
            "    match: {path: /c/}\n"                             # 18
            "    follow_symlinks: false\n")                        # 19
    path, p = run_check(tmp_path, text)
    assert p.returncode == 2, p
    err = p.stderr
    assert re.search(rf"^{re.escape(path)}:12:22: follow_symlinks: false in route 1 needs "
                     r"check_script: true", err, re.M), err
    assert re.search(rf"^{re.escape(path)}:16:22: .*follow_symlinks.*true or false", err,
                     re.M), err
    assert re.search(rf"^{re.escape(path)}:19:\d+: follow_symlinks in route 3: only for FastCGI "
                     r"routes", err, re.M), err
    # follow_symlinks: false with check_script (the default) is a valid config
    ok = text.split("  - upstream: php\n    match")[0].replace("    check_script: false\n", "")
    _, p = run_check(tmp_path, ok)
    assert p.returncode == 0, p
