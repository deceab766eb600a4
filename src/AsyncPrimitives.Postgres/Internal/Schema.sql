-- The AsyncPrimitives.Postgres schema. PostgresCoordinator.EnsureSchemaAsync runs this script in one transaction,
-- under a transaction-level advisory lock (so processes that race to install it take turns), with every
-- "__schema__" replaced by the quoted schema name. Every statement is idempotent.
--
-- Sessions. A coordinator's session is its LISTEN connection, named by that backend's (pid, backend_start). Every
-- row that holds something (a permit, a place in a wait line, a leased queue item) records the session and an
-- expiry, and counts only while both hold: the session still exists in pg_stat_activity, and expires_at (set from
-- the server's now(), renewed by the coordinator's heartbeat) has not passed. So a process that crashes frees what
-- it held as soon as its connection is seen gone, and one that is cut off frees it at most one lease duration later.

CREATE SCHEMA IF NOT EXISTS __schema__;

CREATE TABLE IF NOT EXISTS __schema__.schema_version (
    version int PRIMARY KEY
);

-- Fencing tokens and wait-line tickets. Logged, so a token never repeats, even across a server crash.
CREATE SEQUENCE IF NOT EXISTS __schema__.ids;

-- True unless the backend (pid, backend_start) is known to be gone. Where the role may not see another role's
-- backend_start (it reads as null), a backend with that pid counts as alive: expiry still frees its rows.
CREATE OR REPLACE FUNCTION __schema__.session_alive(p_pid int, p_start timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_stat_get_activity(p_pid) a
        WHERE a.backend_start IS NULL OR a.backend_start = p_start)
$$;

-- Raises AT001 when the caller's session is gone: what it would record would be free for others at once.
CREATE OR REPLACE FUNCTION __schema__.require_session(p_pid int, p_start timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT __schema__.session_alive(p_pid, p_start) THEN
        RAISE EXCEPTION 'the coordinator session (backend %) has ended', p_pid USING ERRCODE = 'AT001';
    END IF;
END
$$;

---------------------------------------------------------------------------------------------------------------------
-- Locks and semaphores. A lock is a permit set of one. Everything here describes sessions that exist now, so the
-- tables are UNLOGGED: no WAL, no commit flush, and a server crash empties them, which is right, as every session
-- ended with it.

-- One row per lock or semaphore ever used: acquire and release lock it, so they take turns per permit set.
CREATE UNLOGGED TABLE IF NOT EXISTS __schema__.permit_sets (
    kind "char" NOT NULL,                   -- 'l' lock, 's' semaphore
    name text NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE UNLOGGED TABLE IF NOT EXISTS __schema__.permit_holders (
    token bigint PRIMARY KEY,               -- the fencing token
    kind "char" NOT NULL,
    name text NOT NULL,
    ticket bigint,                          -- the place in line it was granted to, if it waited
    owner uuid NOT NULL,                    -- the coordinator
    session_pid int NOT NULL,
    session_start timestamptz NOT NULL,
    lease interval NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS permit_holders_set ON __schema__.permit_holders (kind, name);
CREATE UNIQUE INDEX IF NOT EXISTS permit_holders_ticket ON __schema__.permit_holders (ticket) WHERE ticket IS NOT NULL;

-- The FIFO wait line: a waiter may take a permit only while fewer live waiters are ahead of it than permits are free.
CREATE UNLOGGED TABLE IF NOT EXISTS __schema__.permit_waiters (
    ticket bigint PRIMARY KEY,              -- arrival order
    kind "char" NOT NULL,
    name text NOT NULL,
    owner uuid NOT NULL,
    session_pid int NOT NULL,
    session_start timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS permit_waiters_set ON __schema__.permit_waiters (kind, name, ticket);

-- Takes a permit, or joins (p_wait) or keeps (p_ticket) a place in the wait line. Returns the fencing token when the
-- permit is taken; otherwise the caller's ticket (null when it does not wait). A call with a ticket may be repeated
-- (its first answer was lost): when the ticket was already granted, the same token is returned again.
CREATE OR REPLACE FUNCTION __schema__.permit_acquire(
    p_kind "char", p_name text, p_max int, p_ticket bigint, p_wait boolean,
    p_owner uuid, p_pid int, p_start timestamptz, p_lease interval,
    OUT granted_token bigint, OUT waiting_ticket bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_ticket bigint := p_ticket;
    v_taken int;
BEGIN
    PERFORM __schema__.require_session(p_pid, p_start);
    PERFORM 1 FROM __schema__.permit_sets s WHERE s.kind = p_kind AND s.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO __schema__.permit_sets (kind, name) VALUES (p_kind, p_name) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM __schema__.permit_sets s WHERE s.kind = p_kind AND s.name = p_name FOR UPDATE;
    END IF;

    IF v_ticket IS NOT NULL THEN
        SELECT h.token INTO granted_token FROM __schema__.permit_holders h WHERE h.ticket = v_ticket AND h.owner = p_owner;
        IF FOUND THEN
            RETURN;
        END IF;
        -- Still in line? (A place not renewed in time was given up; the caller queues again at the back.)
        UPDATE __schema__.permit_waiters w SET expires_at = now() + p_lease
        WHERE w.ticket = v_ticket AND w.owner = p_owner AND w.expires_at > now();
        IF NOT FOUND THEN
            v_ticket := NULL;
        END IF;
    END IF;

    -- Permits held plus waiters ahead: the permit is ours when that is below the maximum.
    SELECT (SELECT count(*) FROM __schema__.permit_holders h
            WHERE h.kind = p_kind AND h.name = p_name AND h.expires_at > now())
         + (SELECT count(*) FROM __schema__.permit_waiters w
            WHERE w.kind = p_kind AND w.name = p_name AND w.expires_at > now()
              AND (v_ticket IS NULL OR w.ticket < v_ticket))
    INTO v_taken;

    IF v_taken >= p_max THEN
        -- Before refusing, free what dead sessions hold: expired rows, and rows whose session is gone.
        DELETE FROM __schema__.permit_holders h
        WHERE h.kind = p_kind AND h.name = p_name
          AND (h.expires_at <= now() OR NOT __schema__.session_alive(h.session_pid, h.session_start));
        DELETE FROM __schema__.permit_waiters w
        WHERE w.kind = p_kind AND w.name = p_name AND w.ticket IS DISTINCT FROM v_ticket
          AND (w.expires_at <= now() OR NOT __schema__.session_alive(w.session_pid, w.session_start));
        SELECT (SELECT count(*) FROM __schema__.permit_holders h WHERE h.kind = p_kind AND h.name = p_name)
             + (SELECT count(*) FROM __schema__.permit_waiters w
                WHERE w.kind = p_kind AND w.name = p_name AND (v_ticket IS NULL OR w.ticket < v_ticket))
        INTO v_taken;
    END IF;

    IF v_taken < p_max THEN
        granted_token := nextval('__schema__.ids');
        INSERT INTO __schema__.permit_holders
            (token, kind, name, ticket, owner, session_pid, session_start, lease, acquired_at, expires_at)
        VALUES (granted_token, p_kind, p_name, v_ticket, p_owner, p_pid, p_start, p_lease, now(), now() + p_lease);
        IF v_ticket IS NOT NULL THEN
            DELETE FROM __schema__.permit_waiters w WHERE w.ticket = v_ticket;
        END IF;
    ELSIF v_ticket IS NOT NULL THEN
        waiting_ticket := v_ticket;
    ELSIF p_wait THEN
        waiting_ticket := nextval('__schema__.ids');
        INSERT INTO __schema__.permit_waiters (ticket, kind, name, owner, session_pid, session_start, expires_at)
        VALUES (waiting_ticket, p_kind, p_name, p_owner, p_pid, p_start, now() + p_lease);
    END IF;
END
$$;

-- Gives a permit back (a no-op when it is no longer held: lost, or released before). Returns whether other
-- coordinators have waiters for this permit set, which the caller then wakes.
CREATE OR REPLACE FUNCTION __schema__.permit_release(p_kind "char", p_name text, p_token bigint, p_owner uuid)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    -- Taking turns with acquire: a waiter that has just queued is visible here, so it is woken.
    PERFORM 1 FROM __schema__.permit_sets s WHERE s.kind = p_kind AND s.name = p_name FOR UPDATE;
    DELETE FROM __schema__.permit_holders h WHERE h.token = p_token AND h.owner = p_owner;
    RETURN EXISTS (SELECT 1 FROM __schema__.permit_waiters w
                   WHERE w.kind = p_kind AND w.name = p_name AND w.owner <> p_owner AND w.expires_at > now());
END
$$;

-- Leaves the wait line (a cancelled or timed-out wait). Returns whether other coordinators have waiters for this
-- permit set: the ones behind may now be first.
CREATE OR REPLACE FUNCTION __schema__.permit_leave(p_kind "char", p_name text, p_ticket bigint, p_owner uuid)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM __schema__.permit_sets s WHERE s.kind = p_kind AND s.name = p_name FOR UPDATE;
    DELETE FROM __schema__.permit_waiters w WHERE w.ticket = p_ticket AND w.owner = p_owner;
    RETURN EXISTS (SELECT 1 FROM __schema__.permit_waiters w
                   WHERE w.kind = p_kind AND w.name = p_name AND w.owner <> p_owner AND w.expires_at > now());
END
$$;

-- Permits free now: the maximum less the live holders.
CREATE OR REPLACE FUNCTION __schema__.permit_free(p_kind "char", p_name text, p_max int)
RETURNS int
LANGUAGE sql STABLE AS $$
    SELECT greatest(0, p_max - count(*))::int FROM __schema__.permit_holders h
    WHERE h.kind = p_kind AND h.name = p_name AND h.expires_at > now()
      AND __schema__.session_alive(h.session_pid, h.session_start)
$$;

-- The heartbeat: extends the leases the coordinator still knows it holds and its places in wait lines, each by its
-- own lease duration. Returns the permit tokens renewed; a token missing from the answer was lost (it expired or its
-- session ended). Expired rows are never revived: someone else may already count on their permit.
CREATE OR REPLACE FUNCTION __schema__.renew(
    p_owner uuid, p_pid int, p_start timestamptz, p_tokens bigint[], p_tickets bigint[], p_lease interval)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM __schema__.require_session(p_pid, p_start);
    UPDATE __schema__.permit_waiters w SET expires_at = now() + p_lease
    WHERE w.ticket = ANY (p_tickets) AND w.owner = p_owner AND w.expires_at > now();
    RETURN QUERY
        UPDATE __schema__.permit_holders h SET expires_at = now() + h.lease
        WHERE h.token = ANY (p_tokens) AND h.owner = p_owner AND h.expires_at > now()
        RETURNING h.token;
END
$$;

-- A coordinator that closes gives back everything its session holds, rather than leave it to expiry.
CREATE OR REPLACE FUNCTION __schema__.end_session(p_owner uuid, p_pid int, p_start timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM __schema__.permit_holders h WHERE h.owner = p_owner AND h.session_pid = p_pid AND h.session_start = p_start;
    DELETE FROM __schema__.permit_waiters w WHERE w.owner = p_owner AND w.session_pid = p_pid AND w.session_start = p_start;
END
$$;

INSERT INTO __schema__.schema_version (version) VALUES (1) ON CONFLICT DO NOTHING;
