"""Throwaway PostgreSQL clusters for tests and benchmarks.

Each cluster lives in its own temporary directory with its own port and
socket directory, listens on loopback only, and is stopped and removed at
the end.  initdb refuses to run as root, so as root the server runs as the
``postgres`` system user (Debian's postgresql-common creates it).
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile


def _discover_pg_bin():
    """The host's server programs (plugins/module_utils/taler_pg_bin.py); no fixed major."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "plugins", "module_utils", "taler_pg_bin.py")
    spec = importlib.util.spec_from_file_location("_taler_pg_bin", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        return mod.find_bin_dir(["initdb", "pg_ctl", "postgres", "psql"])
    except mod.NotFound:
        return "/usr/lib/postgresql/bin-not-found"


PG_BIN = os.environ.get("TALER_OPS_PG_BIN") or _discover_pg_bin()
FAST_SETTINGS = {
    # Test clusters are disposable: durability off, speed on.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "50",
    "wal_level": "logical",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user):
    """preexec_fn that drops to ``user`` when we are root."""
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam(user)

    def demote():
        os.setgid(pw.pw_gid)
        os.initgroups(user, pw.pw_gid)
        os.setuid(pw.pw_uid)
    return demote


class Cluster:
    def __init__(self, name="test", settings=None, user="postgres"):
        self.name = name
        self.user = user if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.base = tempfile.mkdtemp(prefix=f"taler-ops-{name}-")
        os.chmod(self.base, 0o755)
        self.data = os.path.join(self.base, "data")
        self.sockets = os.path.join(self.base, "run")
        self.log = os.path.join(self.base, "server.log")
        self.port = free_port()
        self.settings = dict(FAST_SETTINGS, **(settings or {}))
        self.superuser = "postgres"
        os.makedirs(self.sockets)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            for path in (self.base, self.sockets):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def _pg(self, tool, *args, check=True):
        env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
        return subprocess.run([os.path.join(PG_BIN, tool), *args], check=check, env=env,
                              preexec_fn=_run_as(self.user), cwd=self.base,
                              capture_output=True, text=True)

    def start(self):
        self._pg("initdb", "-D", self.data, "-E", "UTF8", "--locale=C.UTF-8", "-U",
                 self.superuser, "--auth=trust", "--no-sync")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as fh:
            fh.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                     f"unix_socket_directories = '{self.sockets}'\n")
            for key, value in self.settings.items():
                fh.write(f"{key} = '{value}'\n")
        self._pg("pg_ctl", "-D", self.data, "-l", self.log, "-w", "start")
        return self

    def start_standby_of(self, primary, slot=None):
        """Clone ``primary`` with pg_basebackup (-R) and start this cluster as its hot standby;
        ``slot``: a physical slot pg_basebackup creates on the primary (-C) for it to stream through."""
        self._pg("pg_basebackup", "-h", primary.sockets, "-p", str(primary.port),
                 "-U", primary.superuser, "-D", self.data, "-R", "-X", "stream",
                 "--checkpoint=fast", *(["-C", "-S", slot] if slot else []))
        with open(os.path.join(self.data, "postgresql.conf"), "a") as fh:
            fh.write(f"\nport = {self.port}\nunix_socket_directories = '{self.sockets}'\n"
                     + (f"primary_slot_name = '{slot}'\n" if slot else ""))
        return self.start_existing()

    def start_existing(self):
        """Start again after stop(), keeping data and port."""
        self._pg("pg_ctl", "-D", self.data, "-l", self.log, "-w", "start")
        return self

    def stop(self, mode="fast"):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._pg("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def destroy(self, background=False):
        """Stop the server and remove its files; ``background``: leave the removal to a
        detached ``rm`` (the directory is disposable and nothing waits on it)."""
        self.stop("immediate")
        if background:
            subprocess.Popen(["rm", "-rf", "--", self.base], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    def uri(self, dbname="postgres", user=None):
        user = user or self.superuser
        return f"postgresql://{user}@/{dbname}?host={self.sockets}&port={self.port}"

    def createdb(self, name):
        import psycopg
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def psql(self, dbname, query):
        import psycopg
        with psycopg.connect(self.uri(dbname), autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else None
