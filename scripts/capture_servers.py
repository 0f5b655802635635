"""One function per real server program, started on loopback in a Lab.

Each ``*_server`` context manager starts the daemon (Debian's, or a Python
one where Debian has no small daemon: http.server, pyftpdlib, aiosmtpd,
websockets) with a throw-away configuration in the lab directory, waits
until it listens, yields, and stops it.  Each ``*_client`` function runs the
real client program against it.  Ports are given by the caller, so a
capture's expected labels can name them.
"""

from __future__ import annotations

import contextlib
import glob
import getpass
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from capturelab import Lab, LabError, need, port_free, run, wait_tcp, wait_udp_bound

PY = sys.executable
SCRIPTS = Path(__file__).resolve().parent


def _free_or_fail(port: int, udp: bool = False, host: str = "127.0.0.1") -> None:
    if not port_free(port, udp, host):
        raise LabError(f"{'udp' if udp else 'tcp'} port {port} on {host} is taken; stop what uses it and rerun")


@contextlib.contextmanager
def serving(lab: Lab, cmd: list[str], name: str, port: int, host: str = "127.0.0.1", udp: bool = False,
            **kw: object) -> Iterator[subprocess.Popen]:
    _free_or_fail(port, udp, host)
    proc = lab.start(cmd, name, **kw)  # type: ignore[arg-type]
    try:
        try:
            (wait_udp_bound(port, host) if udp else wait_tcp(port, host, proc=proc))
        except LabError as exc:
            raise LabError(f"{exc}\n{name} log:\n{lab.server_log(name)}") from None
        yield proc
    finally:
        lab.stop(proc)


# --- HTTP ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def http_server(lab: Lab, port: int, host: str = "127.0.0.1") -> Iterator[None]:
    """Python's http.server over a small directory."""
    www = lab.path("www")
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("<html><body>dpicore real-client capture</body></html>\n")
    (www / "data.txt").write_text("hello from http.server\n" * 4)
    with serving(lab, [PY, "-m", "http.server", str(port), "--bind", host, "--directory", str(www)],
                 f"http-{port}", port, host):
        yield


def http_client(port: int, host: str = "127.0.0.1") -> None:
    url_host = f"[{host}]" if ":" in host else host
    base = f"http://{url_host}:{port}"
    run(["curl", "-sS", "-o", "/dev/null", "-A", "curl/dpicore-capture", f"{base}/index.html"])
    run(["curl", "-sS", "-o", "/dev/null", f"{base}/data.txt", "-H", "Accept: text/plain"])
    # http.server has no POST handler: the 501 answer is still an HTTP exchange.
    run(["curl", "-sS", "-o", "/dev/null", "-d", "name=dpicore", f"{base}/form"])


# --- DNS -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def dns_server(lab: Lab, port: int) -> Iterator[None]:
    """dnsmasq as a tiny authoritative-style server for dpicore.test (no upstream, no DHCP)."""
    need("dnsmasq")
    cmd = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
           "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={port}", "--pid-file=",
           "--address=/dpicore.test/127.0.0.1", "--address=/dpicore.test/::1",
           "--txt-record=txt.dpicore.test,\"real client capture\"",
           "--mx-host=dpicore.test,mail.dpicore.test,10", "--user=root"]
    with serving(lab, cmd, f"dnsmasq-{port}", port, udp=True):
        wait_tcp(port)  # dnsmasq also answers over TCP
        yield


def dns_client(port: int, tcp: bool = False) -> None:
    need("dig")
    base = ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1"] + (["+tcp"] if tcp else [])
    for name, rtype in (("www.dpicore.test", "A"), ("www.dpicore.test", "AAAA"), ("txt.dpicore.test", "TXT"),
                        ("dpicore.test", "MX")):
        run(base + [name, rtype])


# --- TLS -----------------------------------------------------------------------------------------

def make_cert(lab: Lab, cn: str = "dpicore.test") -> tuple[Path, Path]:
    """A throw-away EC certificate (small, so the captures stay small)."""
    key, cert = lab.path("tls.key"), lab.path("tls.crt")
    if not cert.exists():
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
             "-addext", f"subjectAltName=DNS:{cn},DNS:*.{cn}"])
    return key, cert


@contextlib.contextmanager
def tls_server(lab: Lab, port: int, mode: str = "-rev", extra: tuple[str, ...] = ()) -> Iterator[None]:
    """openssl s_server; ``-rev`` echoes lines reversed, ``-www`` answers HTTP with a status page."""
    need("openssl")
    key, cert = make_cert(lab)
    cmd = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key),
           mode, *extra]
    # s_server reads its standard input; an open pipe keeps it from seeing EOF.
    with serving(lab, cmd, f"s_server-{port}", port, stdin=subprocess.PIPE):
        yield


def tls_client(port: int, sni: str, extra: tuple[str, ...] = ()) -> None:
    """openssl s_client: handshake, one line of application data, the reversed echo, close."""
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni, *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None
    time.sleep(0.6)
    proc.stdin.write(b"hello from s_client\n")
    proc.stdin.flush()
    time.sleep(0.6)
    proc.stdin.close()  # EOF: s_client sends close_notify and exits
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise LabError(f"s_client to port {port} hung") from None
    assert proc.stdout is not None
    out = proc.stdout.read()
    if b"tneilc_s morf olleh" not in out:
        raise LabError(f"s_client to port {port} got no echo:\n{out.decode(errors='replace')[-1500:]}")


def https_client(port: int, host: str) -> None:
    """curl over TLS with SNI (the name resolves to 127.0.0.1 via --resolve, never DNS)."""
    run(["curl", "-sS", "-k", "-o", "/dev/null", "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/"])


# --- SSH -----------------------------------------------------------------------------------------

def _sshd() -> str:
    path = shutil.which("sshd") or "/usr/sbin/sshd"
    need(path)
    return path


def ssh_keys(lab: Lab) -> tuple[Path, Path]:
    """Temporary host key and client key pair; the client key is the only authorised one."""
    host_key, client_key = lab.path("ssh_host_ed25519_key"), lab.path("id_ed25519")
    if not host_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)])
        lab.write("authorized_keys", lab.path("id_ed25519.pub").read_text(), 0o600)
    return host_key, client_key


@contextlib.contextmanager
def ssh_server(lab: Lab, port: int) -> Iterator[None]:
    """OpenSSH sshd on a private port with a temporary host key and key authentication only."""
    sshd = _sshd()
    host_key, _ = ssh_keys(lab)
    conf = lab.write(f"sshd_config_{port}", f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
AuthorizedKeysFile {lab.path('authorized_keys')}
PidFile {lab.path(f'sshd-{port}.pid')}
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    with serving(lab, [sshd, "-D", "-e", "-f", str(conf)], f"sshd-{port}", port):
        yield


def ssh_client(lab: Lab, port: int) -> None:
    _, key = ssh_keys(lab)
    res = run(["ssh", "-F", "/dev/null", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               f"{getpass.getuser()}@127.0.0.1", "echo", "ssh-ok"])
    if b"ssh-ok" not in res.stdout:
        raise LabError(f"ssh to port {port} did not run the command: {res.stderr.decode(errors='replace')}")


# --- FTP -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def ftp_server(lab: Lab, port: int, passive: tuple[int, int]) -> Iterator[None]:
    """pyftpdlib (Debian has no small FTP daemon that runs unprivileged from a config file)."""
    root = lab.path("ftp")
    root.mkdir(exist_ok=True)
    (root / "readme.txt").write_text("dpicore FTP capture file\n" * 8)
    cmd = [PY, str(SCRIPTS / "ftp_server.py"), "--port", str(port), "--root", str(root),
           "--passive", f"{passive[0]}-{passive[1]}"]
    with serving(lab, cmd, f"ftp-{port}", port):
        yield


def ftp_client(lab: Lab, port: int) -> None:
    base = f"ftp://dpi:capture@127.0.0.1:{port}"
    upload = lab.write("upload.txt", "uploaded by curl\n" * 4)
    run(["curl", "-sS", "-o", "/dev/null", f"{base}/"])                                 # LIST over EPSV
    run(["curl", "-sS", "-o", "/dev/null", "--disable-epsv", f"{base}/readme.txt"])   # RETR over PASV
    run(["curl", "-sS", "--disable-epsv", "-T", str(upload), f"{base}/upload.txt"])    # STOR over PASV


# --- SMTP ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def smtp_server(lab: Lab, port: int) -> Iterator[None]:
    """aiosmtpd's stock server (prints each message; accepts any sender)."""
    cmd = [PY, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Debugging"]
    with serving(lab, cmd, f"smtp-{port}", port):
        yield


def smtp_client(lab: Lab, port: int) -> None:
    msg = lab.write("mail.txt", "From: alice@dpicore.test\r\nTo: bob@dpicore.test\r\nSubject: capture\r\n\r\n"
                                 "A message sent by curl to aiosmtpd on loopback.\r\n")
    run(["curl", "-sS", f"smtp://127.0.0.1:{port}", "--mail-from", "alice@dpicore.test",
         "--mail-rcpt", "bob@dpicore.test", "-T", str(msg)])


# --- Redis, memcached, MQTT ----------------------------------------------------------------------

@contextlib.contextmanager
def redis_server(lab: Lab, port: int) -> Iterator[None]:
    need("redis-server", "redis-cli")
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(lab.dir), "--protected-mode", "yes"]
    with serving(lab, cmd, f"redis-{port}", port):
        yield


def redis_client(port: int) -> None:
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
    run(cli + ["PING"])
    run(cli + ["SET", "dpicore:capture", "real client"])
    run(cli + ["GET", "dpicore:capture"])
    run(cli + ["LPUSH", "dpicore:list", "a", "b", "c"])


@contextlib.contextmanager
def memcached_server(lab: Lab, port: int) -> Iterator[None]:
    need("memcached", "memccp", "memccat")
    cmd = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "8", "-u", "root"]
    with serving(lab, cmd, f"memcached-{port}", port):
        yield


def memcached_client(lab: Lab, port: int, binary: bool) -> None:
    servers = f"--servers=127.0.0.1:{port}"
    flag = ["--binary"] if binary else []
    item = lab.write("dpicore-item", "cached by memcp\n")
    run(["memccp", servers, *flag, str(item)])
    run(["memccat", servers, *flag, "dpicore-item"])


@contextlib.contextmanager
def mqtt_server(lab: Lab, port: int) -> Iterator[None]:
    need("mosquitto", "mosquitto_pub", "mosquitto_sub")
    conf = lab.write(f"mosquitto-{port}.conf", f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                                                "persistence false\n")
    with serving(lab, ["mosquitto", "-c", str(conf)], f"mosquitto-{port}", port):
        yield


def mqtt_client(port: int) -> None:
    common = ["-h", "127.0.0.1", "-p", str(port), "-t", "dpicore/capture"]
    sub = subprocess.Popen(["mosquitto_sub", *common, "-C", "1", "-W", "10"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    time.sleep(0.5)
    run(["mosquitto_pub", *common, "-m", "hello from mosquitto_pub", "-q", "1"])
    out, err = sub.communicate(timeout=15)
    if b"hello from mosquitto_pub" not in out:
        raise LabError(f"mosquitto_sub got nothing: {err.decode(errors='replace')}")


# --- databases -----------------------------------------------------------------------------------

def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise LabError("PostgreSQL server binaries not found (run: bash scripts/install-capture-tools.sh)")
    return found[-1]


@contextlib.contextmanager
def postgres_server(lab: Lab, port: int) -> Iterator[None]:
    """A throw-away cluster owned by the postgres user (initdb refuses root), trust auth on 127.0.0.1."""
    need("psql")
    pg = pwd.getpwnam("postgres")
    data = lab.path("pgdata")
    data.mkdir()
    os.chown(data, pg.pw_uid, pg.pw_gid)
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    run(as_pg + [_pg_bin("initdb"), "-D", str(data), "-U", "dpi", "--auth=trust", "--no-sync", "-E", "UTF8"],
        timeout=120)
    cmd = as_pg + [_pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
                   "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "ssl=off"]
    with serving(lab, cmd, f"postgres-{port}", port):
        yield


def postgres_client(port: int) -> None:
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    # The default sslmode=prefer first sends an SSLRequest (answered "N"), the second connection starts plain.
    run(["psql", f"host=127.0.0.1 port={port} user=dpi dbname=postgres", "-c", "select 1"], env=env)
    run(["psql", f"host=127.0.0.1 port={port} user=dpi dbname=postgres sslmode=disable", "-c",
         "select current_user, version()"], env=env)


@contextlib.contextmanager
def mariadb_server(lab: Lab, port: int) -> Iterator[None]:
    """MariaDB with a fresh data directory; root logs in over TCP without a password (loopback only)."""
    need("mariadbd", "mariadb-install-db", "mariadb")
    data = lab.path("mysql")
    run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root", "--skip-test-db",
         "--auth-root-authentication-method=normal"], timeout=180)
    cmd = ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={lab.path('mysql.sock')}",
           f"--port={port}", "--bind-address=127.0.0.1", "--user=root", "--skip-log-bin",
           "--innodb-buffer-pool-size=16M", f"--pid-file={lab.path('mysql.pid')}"]
    with serving(lab, cmd, f"mariadb-{port}", port):
        yield


def mariadb_client(port: int) -> None:
    run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "root", "--skip-ssl",
         "-e", "select version(); show databases;"])


# --- WebSocket, Telnet, IMAP/POP3 ----------------------------------------------------------------

@contextlib.contextmanager
def websocket_server(lab: Lab, port: int) -> Iterator[None]:
    with serving(lab, [PY, str(SCRIPTS / "ws_echo.py"), "serve", str(port)], f"ws-{port}", port):
        yield


def websocket_client(port: int) -> None:
    res = run([PY, str(SCRIPTS / "ws_echo.py"), "send", str(port)])
    if b"echo: hello" not in res.stdout:
        raise LabError(f"websocket client got no echo: {res.stdout!r}")


@contextlib.contextmanager
def telnet_server(lab: Lab, port: int) -> Iterator[None]:
    """inetutils telnetd on a socket handed over by socat (nofork), running a greeting script, not a login."""
    need("socat", "/usr/sbin/telnetd")
    greet = lab.write("telnet-greeting.sh", "#!/bin/sh\necho 'dpicore telnet capture'\nsleep 0.5\n", 0o755)
    cmd = ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", f"EXEC:/usr/sbin/telnetd -E {greet},nofork"]
    with serving(lab, cmd, f"telnetd-{port}", port):  # socat serves one connection: the client's
        yield


def telnet_client(port: int) -> None:
    need("telnet")
    proc = subprocess.Popen(["telnet", "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    time.sleep(2.0)  # option negotiation, greeting, server closes
    out, _ = proc.communicate(timeout=10)
    if b"dpicore telnet capture" not in out:
        raise LabError(f"telnet got no greeting: {out.decode(errors='replace')}")


@contextlib.contextmanager
def dovecot_server(lab: Lab, imap_port: int, pop3_port: int) -> Iterator[None]:
    """Dovecot with a private config: one passwd-file user, plaintext auth allowed (loopback only)."""
    need("/usr/sbin/dovecot")
    nobody = pwd.getpwnam("nobody")
    home = lab.path("mailhome")
    (home / "Maildir" / "new").mkdir(parents=True)
    (home / "Maildir" / "cur").mkdir()
    (home / "Maildir" / "tmp").mkdir()
    (home / "Maildir" / "new" / "1.dpicore").write_text(
        "From: alice@dpicore.test\r\nTo: dpi@dpicore.test\r\nSubject: hello\r\n\r\nA stored message.\r\n")
    for p in [home, *home.rglob("*")]:
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    lab.write("dovecot.passwd", f"dpi:{{PLAIN}}capture:{nobody.pw_uid}:{nobody.pw_gid}::{home}::\n")
    conf = lab.write("dovecot.conf", f"""\
base_dir = {lab.path('dovecot-run')}
state_dir = {lab.path('dovecot-state')}
log_path = {lab.path('dovecot-server.log')}
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {lab.path('dovecot.passwd')}
}}
userdb {{
  driver = passwd-file
  args = {lab.path('dovecot.passwd')}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""")
    _free_or_fail(pop3_port)
    with serving(lab, ["/usr/sbin/dovecot", "-F", "-c", str(conf)], "dovecot", imap_port):
        wait_tcp(pop3_port)
        yield


def imap_client(port: int) -> None:
    run(["curl", "-sS", "-o", "/dev/null", f"imap://dpi:capture@127.0.0.1:{port}/INBOX"])
    run(["curl", "-sS", "-o", "/dev/null", f"imap://dpi:capture@127.0.0.1:{port}/INBOX;UID=1"])


def pop3_client(port: int) -> None:
    run(["curl", "-sS", "-o", "/dev/null", f"pop3://dpi:capture@127.0.0.1:{port}/"])
    run(["curl", "-sS", "-o", "/dev/null", f"pop3://dpi:capture@127.0.0.1:{port}/1"])
