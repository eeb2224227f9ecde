"""Driver conformance client for psycopg 3 (libpq) and asyncpg.

Usage: client.py psycopg|asyncpg. JSON lines in on stdin, JSON lines out on stdout;
see tests/drivers/clients for the protocol. For psycopg, PSYCOPG_IMPL=python|binary picks
the system libpq (ctypes) or the one bundled in the psycopg-binary wheel.
"""
import asyncio
import json
import os
import sys
import threading

# Variables a previous attempt may have set; cleared before every attempt.
EXTRA_VARS = ("NODE_TLS_REJECT_UNAUTHORIZED", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR")
GRACE_S = 2.0  # hard wall-clock limit is timeout_ms + GRACE_S


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def one_line(exc):
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:300]


def set_env(env):
    # os.environ assignment calls putenv(), so libpq's getenv() sees the change.
    for name in list(os.environ):
        if name.startswith("PG") or name in EXTRA_VARS:
            del os.environ[name]
    os.environ.update(env)


def connect_psycopg(req):
    import psycopg

    # connect_timeout is whole seconds for libpq; round up so it never becomes 0 (= infinite).
    timeout_s = max(1, -(-req["timeout_ms"] // 1000))
    # psycopg's sync connect cannot be interrupted, so run it in a daemon thread and give
    # up waiting after the hard limit (a hung thread is abandoned, never joined).
    result = {}

    def attempt():
        try:
            psycopg.connect(req["target"], connect_timeout=timeout_s).close()
            result["error"] = None
        except BaseException as exc:  # noqa: BLE001 - every failure is a result
            result["error"] = one_line(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(req["timeout_ms"] / 1000 + GRACE_S)
    return result.get("error", "hard timeout: attempt abandoned")


def connect_asyncpg(req):
    import asyncpg

    async def attempt():
        # Errors are caught in here so that a TimeoutError raised by asyncpg's own timeout
        # is not mistaken for the hard limit below.
        try:
            dsn = req["target"] or None  # None: asyncpg reads PG* variables only
            conn = await asyncpg.connect(dsn, timeout=req["timeout_ms"] / 1000)
            await conn.close()
            return None
        except Exception as exc:  # noqa: BLE001 - every failure is a result
            return one_line(exc)

    try:
        return asyncio.run(asyncio.wait_for(attempt(), req["timeout_ms"] / 1000 + GRACE_S))
    except asyncio.TimeoutError:
        return "hard timeout: attempt abandoned"


def ready_line(kind):
    if kind == "psycopg":
        import psycopg

        v = psycopg.pq.version()  # e.g. 150018 -> 15.18 (PostgreSQL >= 10 numbering)
        libpq = f"{v // 10000}.{v % 10000}"
        return {"ready": True, "driver": "libpq",
                "version": f"psycopg {psycopg.__version__}, libpq {libpq}, impl {psycopg.pq.__impl__}"}
    import asyncpg

    return {"ready": True, "driver": "asyncpg", "version": f"asyncpg {asyncpg.__version__}"}


def main():
    kind = sys.argv[1]
    connect = {"psycopg": connect_psycopg, "asyncpg": connect_asyncpg}[kind]
    emit(ready_line(kind))
    for line in sys.stdin:
        if not line.strip():
            continue
        req_id = None
        try:
            req = json.loads(line)
            req_id = req["id"]
            set_env(req.get("env") or {})
            error = connect(req)
        except Exception as exc:  # noqa: BLE001 - a malformed request must not kill the client
            error = one_line(exc)
        emit({"id": req_id, "ok": error is None, "error": error or ""})


if __name__ == "__main__":
    main()
