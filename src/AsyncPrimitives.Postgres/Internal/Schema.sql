-- The AsyncPrimitives.Postgres schema. PostgresCoordinator.EnsureSchemaAsync runs this script in one transaction,
-- under a transaction-level advisory lock (so processes that race to install it take turns), with every
-- "__schema__" replaced by the quoted schema name. Every statement is idempotent.
--
-- Sessions. A coordinator's session is its LISTEN connection, which holds a session-level advisory lock on a random
-- 64-bit key for as long as it lives: that key names the session. Every row that holds something (a permit, a place
-- in a wait line, a leased queue item) records the session and an expiry, and counts only while both hold: the
-- session's lock is still held (the backend exists), and expires_at (set from the server's now(), renewed by the
-- coordinator's heartbeat) has not passed. So a process that crashes frees what it held as soon as its connection is
-- seen gone, and one that is cut off frees it at most one lease duration later. Whether a session lives is asked only
-- where it matters (before refusing a permit, when a queue has nothing else to deliver), and costs one call into the
-- lock manager.

CREATE SCHEMA IF NOT EXISTS __schema__;

-- The installed version (tables, and the functions' names, parameters and results) and the revision of the functions'
-- bodies within it (see Database.Revision).
CREATE TABLE IF NOT EXISTS __schema__.schema_version (
    version int PRIMARY KEY,
    revision int NOT NULL DEFAULT 0
);
ALTER TABLE __schema__.schema_version ADD COLUMN IF NOT EXISTS revision int NOT NULL DEFAULT 0;

-- Runs p_statement, which creates the index p_index, unless that index exists. (CREATE INDEX IF NOT EXISTS takes its
-- SHARE lock on the table before it looks: on a schema in use, run again to replace the functions, it would wait for
-- every transaction writing the table, an application's that put an item included, and hold up every writer after it.)
CREATE OR REPLACE FUNCTION __schema__.create_index(p_index text, p_statement text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass(p_index) IS NULL THEN
        EXECUTE p_statement;
    END IF;
END
$$;

-- Fencing tokens and wait-line tickets. Logged, and jumped ahead after a crash (see ids_jump), so a token never
-- repeats, even across a server crash.
CREATE SEQUENCE IF NOT EXISTS __schema__.ids;

-- Moves the sequence 2^32 ahead of any token it may have handed out, one such jump at a time, and has the caller's
-- commit flushed even where synchronous_commit is off (a second crash must not undo the jump): the first grant after a
-- crash calls it (see permit_grant), and so does an upgrade from a revision before 5, whose grants did not. (New in
-- revision 5; nothing of an older revision calls it.)
CREATE OR REPLACE FUNCTION __schema__.ids_jump()
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('AsyncPrimitives.Postgres __schema__ ids', 0));
    PERFORM set_config('synchronous_commit', 'on', true);
    PERFORM setval('__schema__.ids', nextval('__schema__.ids') + 4294967296);
END
$$;

-- True unless the session p_session has ended: its advisory lock is free, so a shared one can be taken (and is held
-- to the end of the transaction, which is harmless: a key names one session only, and is never used again).
CREATE OR REPLACE FUNCTION __schema__.session_alive(p_session bigint)
RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT NOT pg_try_advisory_xact_lock_shared(p_session)
$$;

-- Raises AT001 when the caller's session is gone (what it would record would be free for others at once); true
-- otherwise. This and permit_turn return a boolean so that the functions below can call them in an assignment
-- (v_ok := ...), which plpgsql evaluates by itself, rather than with PERFORM, which starts the executor for a query:
-- that alone made up a quarter of an uncontended acquire's time in the server.
CREATE OR REPLACE FUNCTION __schema__.require_session(p_session bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT __schema__.session_alive(p_session) THEN
        RAISE EXCEPTION 'the coordinator session % has ended', p_session USING ERRCODE = 'AT001';
    END IF;
    RETURN true;
END
$$;

---------------------------------------------------------------------------------------------------------------------
-- Locks and semaphores. A lock is a permit set of one. Everything here describes sessions that exist now, so the
-- tables are UNLOGGED: no WAL, no commit flush, and a server crash empties them, which is right, as every session
-- ended with it. Acquires and releases of one permit set take turns under a transaction-level advisory lock on a hash
-- of the schema and the set (see permit_turn).

-- The permits of each set, one row per slot, made on first use and then only updated: taking and giving back a permit
-- changes no indexed column, so the update stays on its page (a HOT update, no index entry), and a busy lock does not
-- bloat its indexes. A slot is held while token is set, expires_at has not passed and its session lives.
CREATE UNLOGGED TABLE IF NOT EXISTS __schema__.permit_slots (
    kind "char" NOT NULL,                   -- 'l' lock, 's' semaphore
    name text NOT NULL,
    slot int NOT NULL,
    token bigint,                           -- the fencing token of the holder; null when free
    ticket bigint,                          -- the place in line it was granted to, if it waited
    owner uuid,                             -- the coordinator
    session bigint,
    lease interval,
    acquired_at timestamptz,                -- null while a permit granted to a place in line is not claimed yet
    expires_at timestamptz,
    PRIMARY KEY (kind, name, slot)
) WITH (fillfactor = 50);

-- The FIFO wait line: a waiter may take a permit only while fewer live waiters are ahead of it than permits are free.
CREATE UNLOGGED TABLE IF NOT EXISTS __schema__.permit_waiters (
    ticket bigint PRIMARY KEY,              -- arrival order
    kind "char" NOT NULL,
    name text NOT NULL,
    owner uuid NOT NULL,
    session bigint NOT NULL,
    lease interval NOT NULL,                -- of the permit granted to it
    expires_at timestamptz NOT NULL
);
SELECT __schema__.create_index('__schema__.permit_waiters_set',
    'CREATE INDEX permit_waiters_set ON __schema__.permit_waiters (kind, name, ticket)');

-- Waits for the turn of the permit set, to the end of the transaction; true once it has it.
CREATE OR REPLACE FUNCTION __schema__.permit_turn(p_kind "char", p_name text)
RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('AsyncPrimitives.Postgres __schema__ ' || p_kind::text || ' ' || p_name, 0)) IS NOT NULL
$$;

-- Grants a permit of the set (the caller has its turn and has checked that one is free): a new fencing token in a
-- free slot (one whose holder released it or expired), or in a new slot. Returns the token. A permit granted to a place
-- in line whose wait is in another process (not p_claimed) is not claimed yet: its acquired_at stays null until that
-- wait's call claims it (see renew). (Revision 8 added p_claimed; a schema upgraded from an earlier revision keeps the
-- six-parameter function, unused.)
CREATE OR REPLACE FUNCTION __schema__.permit_grant(
    p_kind "char", p_name text, p_ticket bigint, p_owner uuid, p_session bigint, p_lease interval, p_claimed boolean)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_token bigint;
    v_slot int;
    v_now timestamptz := clock_timestamp(); -- at or after the caller's clock: a slot it counted as free is free here
BEGIN
    SELECT h.slot INTO v_slot FROM __schema__.permit_slots h
    WHERE h.kind = p_kind AND h.name = p_name AND (h.token IS NULL OR h.expires_at <= v_now)
    ORDER BY h.slot LIMIT 1;
    IF FOUND THEN
        v_token := nextval('__schema__.ids');
        UPDATE __schema__.permit_slots h
        SET token = v_token, ticket = p_ticket, owner = p_owner, session = p_session, lease = p_lease,
            acquired_at = CASE WHEN p_claimed THEN v_now END, expires_at = v_now + p_lease
        WHERE h.kind = p_kind AND h.name = p_name AND h.slot = v_slot;
    ELSE
        -- A new slot. No slot at all means the table is new, or a crash emptied it (it is unlogged; a clean restart
        -- keeps it). A crash can take the sequence's last steps with it: the sequence writes its state to the WAL only
        -- every 32 values, and a grant writes nothing else there, so its commit is not flushed. So the first grant
        -- after a crash moves the sequence ahead (ids_jump). The token is taken after the look: one taken before could
        -- predate another grant's jump.
        IF NOT EXISTS (SELECT 1 FROM __schema__.permit_slots) THEN
            PERFORM __schema__.ids_jump();
        END IF;
        v_token := nextval('__schema__.ids');
        INSERT INTO __schema__.permit_slots (kind, name, slot, token, ticket, owner, session, lease, acquired_at, expires_at)
        SELECT p_kind, p_name, coalesce(max(h.slot) + 1, 0), v_token, p_ticket, p_owner, p_session, p_lease,
               CASE WHEN p_claimed THEN v_now END, v_now + p_lease
        FROM __schema__.permit_slots h WHERE h.kind = p_kind AND h.name = p_name;
    END IF;
    RETURN v_token;
END
$$;

-- Takes a permit, or joins (p_wait) or keeps (p_ticket) a place in the wait line. Returns the fencing token when the
-- permit is taken; otherwise the caller's ticket (null when it does not wait). A waiter's permit may have been granted
-- to its ticket by a release (see permit_release): the call then claims it, and a repeated call (its first answer was
-- lost) gets the same token again. An acquire that finds no one waiting and a slot free is one update of that slot;
-- sessions are checked only before refusing.
CREATE OR REPLACE FUNCTION __schema__.permit_acquire(
    p_kind "char", p_name text, p_max int, p_ticket bigint, p_wait boolean,
    p_owner uuid, p_session bigint, p_lease interval,
    OUT granted_token bigint, OUT waiting_ticket bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_ok boolean;
    v_ticket bigint := p_ticket;
    v_held bigint;
    v_ahead bigint;
    v_now timestamptz;
BEGIN
    v_ok := __schema__.require_session(p_session);
    v_ok := __schema__.permit_turn(p_kind, p_name);
    v_now := clock_timestamp(); -- expiries are judged from here, after the wait for the turn (see renew)

    IF v_ticket IS NULL THEN
        UPDATE __schema__.permit_slots h
        SET token = nextval('__schema__.ids'), ticket = NULL, owner = p_owner, session = p_session, lease = p_lease,
            acquired_at = v_now, expires_at = v_now + p_lease
        WHERE h.kind = p_kind AND h.name = p_name
          AND h.slot = (SELECT f.slot FROM __schema__.permit_slots f
                        WHERE f.kind = p_kind AND f.name = p_name AND (f.token IS NULL OR f.expires_at <= v_now)
                        ORDER BY f.slot LIMIT 1)
          AND NOT EXISTS (SELECT 1 FROM __schema__.permit_waiters w
                          WHERE w.kind = p_kind AND w.name = p_name AND w.expires_at > v_now)
          AND (SELECT count(*) FROM __schema__.permit_slots c
               WHERE c.kind = p_kind AND c.name = p_name AND c.token IS NOT NULL AND c.expires_at > v_now) < p_max
        RETURNING h.token INTO granted_token;
        IF FOUND THEN
            RETURN;
        END IF;
    ELSE
        -- Granted to this ticket by a release? Claimed now: its expiry counts from this call. (A repeated claim, whose
        -- first answer was lost, finds it claimed.)
        UPDATE __schema__.permit_slots h SET expires_at = v_now + h.lease, acquired_at = coalesce(h.acquired_at, v_now)
        WHERE h.kind = p_kind AND h.name = p_name AND h.ticket = v_ticket AND h.owner = p_owner AND h.expires_at > v_now
        RETURNING h.token INTO granted_token;
        IF FOUND THEN
            RETURN;
        END IF;
        -- Still in line? (A place not renewed in time was given up; the caller queues again at the back.)
        UPDATE __schema__.permit_waiters w SET expires_at = v_now + p_lease
        WHERE w.ticket = v_ticket AND w.owner = p_owner AND w.expires_at > v_now;
        IF NOT FOUND THEN
            DELETE FROM __schema__.permit_waiters w WHERE w.ticket = v_ticket AND w.owner = p_owner;
            v_ticket := NULL;
        END IF;
    END IF;

    -- The permit is ours while the live holders plus the live waiters ahead are fewer than the maximum; the waiters are
    -- counted only when the holders alone leave a permit free. Before refusing, free what dead sessions hold among what
    -- makes the caller wait (the holders when they fill the set, else the waiters ahead): expired rows, and rows whose
    -- session is gone; then count again. (Counted here rather than in an SQL function, whose plan would be made again
    -- in every transaction: a plpgsql statement keeps its plan for the connection's life.)
    FOR v_round IN 1..3 LOOP
        SELECT count(*) INTO v_held FROM __schema__.permit_slots h
        WHERE h.kind = p_kind AND h.name = p_name AND h.token IS NOT NULL AND h.expires_at > v_now;
        v_ahead := 0;
        IF v_held < p_max THEN
            SELECT count(*) INTO v_ahead FROM __schema__.permit_waiters w
            WHERE w.kind = p_kind AND w.name = p_name AND w.expires_at > v_now AND (v_ticket IS NULL OR w.ticket < v_ticket);
        END IF;
        EXIT WHEN v_held + v_ahead < p_max OR v_round = 3;
        IF v_held >= p_max THEN
            UPDATE __schema__.permit_slots h SET token = NULL, ticket = NULL, owner = NULL, session = NULL
            WHERE h.kind = p_kind AND h.name = p_name AND h.token IS NOT NULL
              AND (h.expires_at <= v_now OR NOT __schema__.session_alive(h.session));
        ELSE
            DELETE FROM __schema__.permit_waiters w
            WHERE w.kind = p_kind AND w.name = p_name AND w.ticket IS DISTINCT FROM v_ticket
              AND (w.expires_at <= v_now OR NOT __schema__.session_alive(w.session));
        END IF;
        EXIT WHEN NOT FOUND;
    END LOOP;

    IF v_held + v_ahead < p_max THEN
        granted_token := __schema__.permit_grant(p_kind, p_name, v_ticket, p_owner, p_session, p_lease, true);
        IF v_ticket IS NOT NULL THEN
            DELETE FROM __schema__.permit_waiters w WHERE w.ticket = v_ticket;
        END IF;
    ELSIF v_ticket IS NOT NULL THEN
        waiting_ticket := v_ticket;
    ELSIF p_wait THEN
        waiting_ticket := nextval('__schema__.ids');
        INSERT INTO __schema__.permit_waiters (ticket, kind, name, owner, session, lease, expires_at)
        VALUES (waiting_ticket, p_kind, p_name, p_owner, p_session, p_lease, v_now + p_lease);
    END IF;
END
$$;

-- Gives a permit back (p_token), or ends a wait that did not get its permit (p_ticket: a cancelled or timed-out wait
-- leaves its place, and gives back the permit a release may have granted to it meanwhile); a no-op for what the caller
-- no longer holds. Then hands the permits free (of p_max) to the first live waiters in line, as their own calls would
-- have taken them: their slots record their tickets, and their next call claims them. Returns the tickets of the
-- caller's own waiters granted so (with their tokens), for it to hand over in its process, and whether other
-- coordinators have waiters, which the caller then wakes.
CREATE OR REPLACE FUNCTION __schema__.permit_release(
    p_kind "char", p_name text, p_max int, p_token bigint, p_ticket bigint, p_owner uuid,
    OUT others_wait boolean, OUT granted_tickets bigint[], OUT granted_tokens bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    v_ok boolean;
    v_free bigint;
    v_waiter record;
    v_token bigint;
    v_now timestamptz;
    v_freed boolean := false;
BEGIN
    -- Taking turns with acquire: a waiter that has just queued is visible here, so it is served or woken.
    v_ok := __schema__.permit_turn(p_kind, p_name);
    v_now := clock_timestamp(); -- expiries are judged from here, after the wait for the turn (see renew)
    IF p_token IS NOT NULL THEN
        UPDATE __schema__.permit_slots h SET token = NULL, ticket = NULL, owner = NULL, session = NULL
        WHERE h.kind = p_kind AND h.name = p_name AND h.token = p_token AND h.owner = p_owner;
        v_freed := FOUND;
    END IF;
    IF p_ticket IS NOT NULL THEN
        DELETE FROM __schema__.permit_waiters w WHERE w.ticket = p_ticket AND w.owner = p_owner;
        v_freed := v_freed OR FOUND;
        UPDATE __schema__.permit_slots h SET token = NULL, ticket = NULL, owner = NULL, session = NULL
        WHERE h.kind = p_kind AND h.name = p_name AND h.ticket = p_ticket AND h.owner = p_owner;
        v_freed := v_freed OR FOUND;
    END IF;

    others_wait := false;
    IF EXISTS (SELECT 1 FROM __schema__.permit_waiters w WHERE w.kind = p_kind AND w.name = p_name) THEN
        v_free := p_max - (SELECT count(*) FROM __schema__.permit_slots h
                           WHERE h.kind = p_kind AND h.name = p_name AND h.token IS NOT NULL AND h.expires_at > v_now);
        FOR v_waiter IN
            SELECT w.ticket, w.owner, w.session, w.lease FROM __schema__.permit_waiters w
            WHERE w.kind = p_kind AND w.name = p_name AND w.expires_at > v_now AND __schema__.session_alive(w.session)
            ORDER BY w.ticket
            LIMIT greatest(v_free, 0)
        LOOP
            -- Claimed at once when the caller hands it to its own wait (which makes no call for it); another process's
            -- wait claims it with its next call.
            v_token := __schema__.permit_grant(
                p_kind, p_name, v_waiter.ticket, v_waiter.owner, v_waiter.session, v_waiter.lease, v_waiter.owner = p_owner);
            DELETE FROM __schema__.permit_waiters w WHERE w.ticket = v_waiter.ticket;
            IF v_waiter.owner = p_owner THEN
                granted_tickets := granted_tickets || v_waiter.ticket;
                granted_tokens := granted_tokens || v_token;
            ELSE
                others_wait := true;
            END IF;
        END LOOP;
        -- Other processes' waits still in line; and one whose place expired while its process lives (its renewals did
        -- not reach the server in time): it is still waiting, and queues again when it next asks, which only a wake-up
        -- brings before its poll.
        others_wait := others_wait OR EXISTS (
            SELECT 1 FROM __schema__.permit_waiters w
            WHERE w.kind = p_kind AND w.name = p_name AND w.owner <> p_owner
              AND (w.expires_at > v_now OR __schema__.session_alive(w.session)));
    END IF;
    -- Nothing to free: perhaps a repeat of a release whose answer was lost, whose first run granted the permit to a wait
    -- in another process. That wait is woken only by this answer: so is any wait elsewhere with an unclaimed grant.
    IF NOT v_freed AND NOT others_wait THEN
        others_wait := EXISTS (
            SELECT 1 FROM __schema__.permit_slots h
            WHERE h.kind = p_kind AND h.name = p_name AND h.owner <> p_owner AND h.token IS NOT NULL
              AND h.acquired_at IS NULL AND h.expires_at > v_now);
    END IF;
END
$$;

-- Permits free now: the maximum less the live holders.
CREATE OR REPLACE FUNCTION __schema__.permit_free(p_kind "char", p_name text, p_max int)
RETURNS int
LANGUAGE sql VOLATILE AS $$
    SELECT greatest(0, p_max - count(*))::int FROM __schema__.permit_slots h
    WHERE h.kind = p_kind AND h.name = p_name AND h.token IS NOT NULL AND h.expires_at > now()
      AND __schema__.session_alive(h.session)
$$;

---------------------------------------------------------------------------------------------------------------------
-- Queues. Items are durable: a put commits its rows, and only a completion (or the move to the dead letters, or an
-- immediate shutdown) deletes one. A delivery is a lease on an item, recorded on its row like a permit: the session,
-- an expiry renewed by the heartbeat, and a lease token that a completion must present.

-- A queue has a row here once it is shut down (every process sees it: puts, and gets once drained, then fail).
CREATE TABLE IF NOT EXISTS __schema__.queues (
    name text PRIMARY KEY,
    shut_down_at timestamptz NOT NULL,
    immediate boolean NOT NULL
);

-- Frequent inserts, updates and deletes: vacuum early and leave room on each page for the heartbeat's updates.
CREATE TABLE IF NOT EXISTS __schema__.queue_items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- put order
    queue text NOT NULL,
    priority int NOT NULL,
    payload json NOT NULL,                                -- as System.Text.Json wrote it (jsonb would reorder keys)
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    attempts int NOT NULL DEFAULT 0,                      -- deliveries so far
    lease_token bigint,                                   -- the current delivery; null while the item waits
    lease_owner uuid,
    session bigint,
    lease interval,
    leased_until timestamptz,
    max_attempts int                                      -- the MaxAttempts of the consumer that has it
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
        autovacuum_analyze_scale_factor = 0.02);
SELECT __schema__.create_index('__schema__.queue_items_ready',
    'CREATE INDEX queue_items_ready ON __schema__.queue_items (queue, id) WHERE lease_token IS NULL');
SELECT __schema__.create_index('__schema__.queue_items_ready_priority',
    'CREATE INDEX queue_items_ready_priority ON __schema__.queue_items (queue, priority, id) WHERE lease_token IS NULL');
-- The deliveries, by expiry (leased_until is set exactly while lease_token is). A statement that looks an item up by
-- its id writes its expiry check as coalesce(leased_until, '-infinity') > clock_timestamp(), which does not imply this
-- index's predicate: otherwise the planner, which sees this index nearly empty whenever the table was analyzed, scans
-- it whole (with every entry that ended deliveries left in it) instead of probing the primary key.
SELECT __schema__.create_index('__schema__.queue_items_leased',
    'CREATE INDEX queue_items_leased ON __schema__.queue_items (queue, leased_until) WHERE leased_until IS NOT NULL');

CREATE TABLE IF NOT EXISTS __schema__.queue_dead_letters (
    id bigint PRIMARY KEY,                                -- the item's id in queue_items
    queue text NOT NULL,
    priority int NOT NULL,
    payload json NOT NULL,
    enqueued_at timestamptz NOT NULL,
    attempts int NOT NULL,
    dead_at timestamptz NOT NULL DEFAULT now(),
    reason text NOT NULL                                  -- how its last delivery ended: abandoned, expired, session ended
);
SELECT __schema__.create_index('__schema__.queue_dead_letters_queue',
    'CREATE INDEX queue_dead_letters_queue ON __schema__.queue_dead_letters (queue, id)');

-- The joins waiting now (JoinAsync), one row each, so that a completion looks whether it left its queue with nothing
-- unfinished, and wakes the joins, only when some join waits: otherwise every completion that empties a queue, the
-- common case when consumers keep up, would send a notification to every process. Unlogged: a join lives as long as
-- its session. A row whose session ended without removing it only makes completions look (and wake no one); the
-- next join of the queue removes it.
CREATE UNLOGGED TABLE IF NOT EXISTS __schema__.queue_joins (
    id bigint PRIMARY KEY,
    queue text NOT NULL,
    owner uuid NOT NULL,
    session bigint NOT NULL
);
SELECT __schema__.create_index('__schema__.queue_joins_queue',
    'CREATE INDEX queue_joins_queue ON __schema__.queue_joins (queue)');

-- The turns of one queue, each a transaction-level advisory lock on a hash of its name: the put turn (p_takes false),
-- which a put holds shared until its transaction ends and a shutdown exclusively, and the take turn (p_takes true,
-- under a prefix no put turn's key can have, whatever the queue's name), which a take holds shared until it commits and
-- a shutdown exclusively once it has the put turn. Only that queue's calls take them, so a shutdown waiting for a
-- caller's open transaction that put an item holds up no other queue and no get. A take that ran before a shutdown has
-- committed when the shutdown does, and one that runs after sees it: so no take leases the last items without seeing
-- a shutdown that a get looking at that moment already sees (that get, finding those items still waiting, waits for
-- the take to wake it: see queue_take).
CREATE OR REPLACE FUNCTION __schema__.queue_turn(p_queue text, p_takes boolean, p_exclusive boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_key bigint := hashtextextended(
        'AsyncPrimitives.Postgres __schema__ ' || CASE WHEN p_takes THEN 'queue-takes ' ELSE 'queue ' END || p_queue, 0);
BEGIN
    IF p_exclusive THEN
        PERFORM pg_advisory_xact_lock(v_key);
    ELSE
        PERFORM pg_advisory_xact_lock_shared(v_key);
    END IF;
    RETURN true;
END
$$;

-- The queue's count turn: a statement that ends an item (a completion, or a move to the dead letters) takes it after it
-- has done so and holds it until it commits; exclusively while a join waits (true: a completion then counts what is
-- unfinished, see queue_complete), shared otherwise. So a completion that counts for a join does so after every other
-- statement that ended an item before it has committed, whether or not that one saw the join: without the turn, two
-- of them ending the last items at the same moment would each see the other's item unfinished (neither has
-- committed), and neither would wake the join. A transaction-level advisory lock under a prefix no turn's key has, taken
-- once per queue by a transaction (never both ways); whoever holds it waits for no item's row afterwards (a take skips
-- locked rows), so taking it after locking rows makes no cycle.
CREATE OR REPLACE FUNCTION __schema__.queue_count_turn(p_queue text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_key bigint := hashtextextended('AsyncPrimitives.Postgres __schema__ queue-joins ' || p_queue, 0);
BEGIN
    -- A join of a session that ended (its process crashed: nothing removed its row) waits for nothing.
    IF EXISTS (SELECT 1 FROM __schema__.queue_joins j WHERE j.queue = p_queue AND __schema__.session_alive(j.session)) THEN
        PERFORM pg_advisory_xact_lock(v_key);
        RETURN true;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(v_key);
    RETURN false;
END
$$;

-- Puts items, in order. Raises AT002 when the queue is shut down. The check comes after the put's turn: a shutdown
-- takes that turn exclusively first, so it waits for a put that holds it (until the put's transaction ends), and a
-- put that takes it after the shutdown committed sees it here. In a caller's transaction at REPEATABLE READ, the check reads the transaction's snapshot,
-- which may be older than a shutdown that committed meanwhile: there the put first tries to insert the queue's row
-- itself (undone at once), and such a row, committed and not in the snapshot, makes that insert fail with a
-- serialization failure, answered as AT002. (Not at SERIALIZABLE: that write would add read/write conflicts between
-- concurrent puts; see docs/scale-out.md.) Returns the transaction's id, so that the caller can learn when it commits.
CREATE OR REPLACE FUNCTION __schema__.queue_put(p_queue text, p_priorities int[], p_payloads json[])
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_ok boolean;
BEGIN
    v_ok := __schema__.queue_turn(p_queue, false, false);
    IF cardinality(p_payloads) = 1 THEN
        -- One item: a plain insert (no set to unnest and sort).
        INSERT INTO __schema__.queue_items (queue, priority, payload) VALUES (p_queue, p_priorities[1], p_payloads[1]);
    ELSE
        INSERT INTO __schema__.queue_items (queue, priority, payload)
        SELECT p_queue, t.priority, t.payload
        FROM unnest(p_priorities, p_payloads) WITH ORDINALITY AS t(priority, payload, n)
        ORDER BY t.n;
    END IF;
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        BEGIN
            INSERT INTO __schema__.queues (name, shut_down_at, immediate) VALUES (p_queue, now(), false)
            ON CONFLICT (name) DO NOTHING;
            RAISE EXCEPTION USING ERRCODE = 'AT003'; -- undoes the row, if it was inserted
        EXCEPTION
            WHEN serialization_failure THEN
                RAISE EXCEPTION 'the queue % is shut down', p_queue USING ERRCODE = 'AT002';
            WHEN SQLSTATE 'AT003' THEN
                NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM __schema__.queues s WHERE s.name = p_queue) THEN
        RAISE EXCEPTION 'the queue % is shut down', p_queue USING ERRCODE = 'AT002';
    END IF;
    RETURN txid_current();
END
$$;

-- Ends deliveries (p_ids, each with the reason it ended): each item goes back in line, or to the dead letters when it
-- has had max_attempts deliveries. Returns the number that went back in line.
CREATE OR REPLACE FUNCTION __schema__.queue_end_deliveries(p_ids bigint[], p_reasons text[])
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_back int;
BEGIN
    WITH ended AS (
        SELECT * FROM unnest(p_ids, p_reasons) AS e(id, reason)
    ), dead AS (
        DELETE FROM __schema__.queue_items q USING ended e
        WHERE q.id = e.id AND q.attempts >= q.max_attempts
        RETURNING q.id, q.queue, q.priority, q.payload, q.enqueued_at, q.attempts, e.reason
    ), buried AS (
        INSERT INTO __schema__.queue_dead_letters (id, queue, priority, payload, enqueued_at, attempts, reason)
        SELECT * FROM dead
    ), back AS (
        UPDATE __schema__.queue_items q
        SET lease_token = NULL, lease_owner = NULL, session = NULL, lease = NULL,
            leased_until = NULL, max_attempts = NULL
        FROM ended e
        WHERE q.id = e.id AND q.attempts < q.max_attempts
        RETURNING 1
    )
    SELECT count(*) INTO v_back FROM back;
    RETURN v_back;
END
$$;

-- Ends the deliveries of the queue that no one completed in time: expired ones, and (p_check_sessions) ones whose
-- session is gone (see queue_end_deliveries). Returns the number that went back in line.
CREATE OR REPLACE FUNCTION __schema__.queue_reclaim(p_queue text, p_check_sessions boolean)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v_reasons text[];
    v_now timestamptz := clock_timestamp(); -- not the transaction's start: a take may have waited for its turn
BEGIN
    SELECT array_agg(e.id), array_agg(e.reason) INTO v_ids, v_reasons
    FROM (SELECT q.id, CASE WHEN q.leased_until <= v_now THEN 'expired' ELSE 'session ended' END AS reason
          FROM __schema__.queue_items q
          WHERE q.queue = p_queue AND q.leased_until IS NOT NULL
            AND (q.leased_until <= v_now
                 OR (p_check_sessions AND NOT __schema__.session_alive(q.session)))
          FOR UPDATE SKIP LOCKED) e;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    RETURN __schema__.queue_end_deliveries(v_ids, v_reasons);
END
$$;

-- Takes up to p_count waiting items in the given order ('f' first in first out, 'l' last in first out, 'p' smallest
-- priority first, then first in), skipping items other consumers are taking at this moment; one query per order, so
-- that each reads its index in order and stops after p_count rows, then one update leases them. Expired deliveries
-- go back in line first (an index probe, which finds none as a rule); when nothing waits, so do the deliveries of
-- dead sessions.
-- With p_id, it first completes that delivery (p_token its lease), as queue_complete does: a reading loop completes an
-- item and takes the next in one call. When the caller no longer held that lease, it takes nothing.
-- Besides the items, a row with no item may say something ("signal"): 'l' the lease of p_id was lost; 'd' the
-- completion left nothing unfinished while a join waits; 's' the queue is shut down and nothing waits (a row, not an
-- error, which would undo the completion); 'S' the queue is shut down, with the items taken (the caller wakes the other
-- getters: one that looked while these items were being taken or given back found nothing, and waits).
CREATE OR REPLACE FUNCTION __schema__.queue_take(
    p_queue text, p_order "char", p_count int, p_owner uuid, p_session bigint, p_lease interval,
    p_max_attempts int, p_id bigint, p_token bigint)
RETURNS TABLE (item_id bigint, item_lease_token bigint, item_attempt int, item_priority int, item_payload json,
               signal "char")
LANGUAGE plpgsql AS $$
DECLARE
    v_ok boolean;
    v_ids bigint[];
    v_done record;
    v_now timestamptz;
BEGIN
    v_ok := __schema__.require_session(p_session);
    v_ok := __schema__.queue_turn(p_queue, true, false);
    -- A signal row: signal set, the item columns never assigned (null).
    IF p_id IS NOT NULL THEN
        SELECT * INTO v_done FROM __schema__.queue_complete(p_queue, ARRAY[p_id], ARRAY[p_token], p_owner);
        IF cardinality(v_done.completed) = 0 THEN
            signal := 'l';
            RETURN NEXT;
            RETURN;
        END IF;
        IF v_done.drained THEN
            signal := 'd';
            RETURN NEXT;
        END IF;
    END IF;
    -- Expiries are judged from here, after the waits for the turn and for the completion's row (not the call's start).
    v_now := clock_timestamp();
    IF EXISTS (SELECT 1 FROM __schema__.queue_items q
               WHERE q.queue = p_queue AND q.leased_until <= v_now) THEN
        PERFORM __schema__.queue_reclaim(p_queue, false);
    END IF;
    FOR v_round IN 1..3 LOOP
        IF p_order = 'p' THEN
            v_ids := ARRAY(SELECT w.id FROM __schema__.queue_items w WHERE w.queue = p_queue AND w.lease_token IS NULL
                           ORDER BY w.priority, w.id LIMIT p_count FOR UPDATE SKIP LOCKED);
        ELSIF p_order = 'l' THEN
            v_ids := ARRAY(SELECT w.id FROM __schema__.queue_items w WHERE w.queue = p_queue AND w.lease_token IS NULL
                           ORDER BY w.id DESC LIMIT p_count FOR UPDATE SKIP LOCKED);
        ELSE
            v_ids := ARRAY(SELECT w.id FROM __schema__.queue_items w WHERE w.queue = p_queue AND w.lease_token IS NULL
                           ORDER BY w.id LIMIT p_count FOR UPDATE SKIP LOCKED);
        END IF;
        IF cardinality(v_ids) = 1 THEN
            -- One item: the id as a scalar, so that the statement keeps one plan for the connection's life (with the
            -- array, the planner weighs an array of unknown length, and plans the statement again on every call).
            RETURN QUERY
                UPDATE __schema__.queue_items q
                SET lease_token = nextval('__schema__.ids'), attempts = q.attempts + 1, lease_owner = p_owner,
                    session = p_session, lease = p_lease, leased_until = now() + p_lease, max_attempts = p_max_attempts
                WHERE q.id = v_ids[1]
                RETURNING q.id, q.lease_token, q.attempts, q.priority, q.payload, NULL::"char";
        ELSIF cardinality(v_ids) > 1 THEN
            RETURN QUERY
                UPDATE __schema__.queue_items q
                SET lease_token = nextval('__schema__.ids'), attempts = q.attempts + 1, lease_owner = p_owner,
                    session = p_session, lease = p_lease, leased_until = now() + p_lease, max_attempts = p_max_attempts
                WHERE q.id = ANY (v_ids)
                RETURNING q.id, q.lease_token, q.attempts, q.priority, q.payload, NULL::"char";
        END IF;
        IF cardinality(v_ids) > 0 THEN
            IF EXISTS (SELECT 1 FROM __schema__.queues s WHERE s.name = p_queue) THEN
                signal := 'S';
                RETURN NEXT;
            END IF;
            RETURN;
        END IF;
        -- Nothing waits: end the deliveries of dead sessions, and look again if any came back.
        EXIT WHEN v_round = 2 OR __schema__.queue_reclaim(p_queue, true) = 0;
    END LOOP;
    -- Shut down and nothing left to deliver; not while an item this call skipped waits, or an expired delivery or one
    -- of a dead session is being given back by another call (its row locked, not yet committed): then the caller waits
    -- and looks again, and the call that takes those items wakes it. Expired by the clock now: the reclaims above may
    -- have waited (for a dead letter's key), and a lease that ended meanwhile is left to deliver.
    IF EXISTS (SELECT 1 FROM __schema__.queues s WHERE s.name = p_queue)
       AND NOT EXISTS (SELECT 1 FROM __schema__.queue_items q WHERE q.queue = p_queue AND q.lease_token IS NULL)
       AND NOT EXISTS (SELECT 1 FROM __schema__.queue_items q
                       WHERE q.queue = p_queue AND q.leased_until IS NOT NULL
                         AND (q.leased_until <= clock_timestamp() OR NOT __schema__.session_alive(q.session))) THEN
        signal := 's';
        RETURN NEXT;
    END IF;
END
$$;

-- Locks the caller's items among p_ids, in the order of their ids. Every statement that locks several items of a
-- consumer calls this first (queue_complete, renew; end_session gives them back one by one in the same order), so that
-- two of them on the same items (a completion and the heartbeat's renewal) never wait for each other in a cycle.
CREATE OR REPLACE FUNCTION __schema__.queue_lock_items(p_ids bigint[], p_owner uuid)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM __schema__.queue_items q WHERE q.id = ANY (p_ids) AND q.lease_owner = p_owner ORDER BY q.id FOR UPDATE;
    RETURN true;
END
$$;

-- Completes deliveries: deletes the items whose lease the caller still holds, has not expired and was taken by a
-- session that has not ended (the others count a dead session's delivery as ended: see queue_counts). The expiry is
-- checked against the clock when the row is reached (clock_timestamp), not the transaction's start (now): a statement
-- that waited for a row's lock past the expiry must not complete what the others counted as expired. Returns the ids
-- completed, counting as completed those an immediate shutdown dropped (nothing is left to do for them), and whether
-- the queue now has nothing unfinished and a join waits for that. The shutdown is looked up only when some item was not
-- completed; an item gone otherwise was completed by a later delivery, and is not counted.
CREATE OR REPLACE FUNCTION __schema__.queue_complete(p_queue text, p_ids bigint[], p_tokens bigint[], p_owner uuid,
    OUT completed bigint[], OUT drained boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_ok boolean;
BEGIN
    IF cardinality(p_ids) = 1 THEN
        -- One item: scalars, for one plan for the connection's life (see queue_take).
        DELETE FROM __schema__.queue_items q
        WHERE q.id = p_ids[1] AND q.lease_token = p_tokens[1] AND q.lease_owner = p_owner
          AND coalesce(q.leased_until, '-infinity') > clock_timestamp() AND __schema__.session_alive(q.session);
        completed := CASE WHEN FOUND THEN p_ids ELSE '{}' END;
    ELSE
        v_ok := __schema__.queue_lock_items(p_ids, p_owner);
        WITH done AS (
            DELETE FROM __schema__.queue_items q USING unnest(p_ids, p_tokens) AS r(id, token)
            WHERE q.id = r.id AND q.lease_token = r.token AND q.lease_owner = p_owner
              AND coalesce(q.leased_until, '-infinity') > clock_timestamp() AND __schema__.session_alive(q.session)
            RETURNING q.id
        )
        SELECT coalesce(array_agg(d.id), '{}') INTO completed FROM done d;
    END IF;
    IF cardinality(completed) < cardinality(p_ids)
       AND EXISTS (SELECT 1 FROM __schema__.queues s WHERE s.name = p_queue AND s.immediate) THEN
        SELECT coalesce(array_agg(r.id), '{}') INTO completed FROM unnest(p_ids) AS r(id)
        WHERE r.id = ANY (completed) OR NOT EXISTS (SELECT 1 FROM __schema__.queue_items q WHERE q.id = r.id);
    END IF;
    -- Looked up only while a join waits (see queue_joins), with the join's own count, in the queue's count turn (see
    -- queue_count_turn): after every other completion or move to the dead letters that holds it has committed.
    drained := false;
    IF __schema__.queue_count_turn(p_queue) THEN
        drained := (SELECT c.unfinished FROM __schema__.queue_counts(p_queue) c) = 0;
    END IF;
END
$$;

-- Gives a delivery back: the item goes back in line now, or to the dead letters when it has had max_attempts
-- deliveries. Returns 'r' (back in line), 'd' (dead letter: the caller wakes the joins once this has committed, in the
-- queue's count turn) or 'n' (the caller no longer held it).
CREATE OR REPLACE FUNCTION __schema__.queue_abandon(p_id bigint, p_token bigint, p_owner uuid)
RETURNS "char"
LANGUAGE plpgsql AS $$
DECLARE
    v_queue text;
    v_ok boolean;
BEGIN
    SELECT q.queue INTO v_queue FROM __schema__.queue_items q
    WHERE q.id = p_id AND q.lease_token = p_token AND q.lease_owner = p_owner
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'n';
    END IF;
    IF __schema__.queue_end_deliveries(ARRAY[p_id], ARRAY['abandoned']) > 0 THEN
        RETURN 'r';
    END IF;
    v_ok := __schema__.queue_count_turn(v_queue);
    RETURN 'd';
END
$$;

-- Shuts a queue down (once; a later immediate shutdown still drops what is left). Immediate drops every item, waiting
-- or delivered. The queue's put turn, taken exclusively, waits for puts in flight and holds off new ones until this
-- commits (see queue_put); then its take turn, for the takes in flight (see queue_turn). An immediate shutdown
-- locks the queue's items in the order of their ids before it deletes them, as every statement that locks several items
-- does (see queue_lock_items), so that it never waits for a completion or a renewal in a cycle.
CREATE OR REPLACE FUNCTION __schema__.queue_shutdown(p_queue text, p_immediate boolean)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_ok boolean;
BEGIN
    v_ok := __schema__.queue_turn(p_queue, false, true);
    v_ok := __schema__.queue_turn(p_queue, true, true);
    INSERT INTO __schema__.queues (name, shut_down_at, immediate) VALUES (p_queue, now(), p_immediate)
    ON CONFLICT (name) DO UPDATE SET immediate = __schema__.queues.immediate OR excluded.immediate;
    IF p_immediate THEN
        PERFORM 1 FROM __schema__.queue_items q WHERE q.queue = p_queue ORDER BY q.id FOR UPDATE;
        DELETE FROM __schema__.queue_items q WHERE q.queue = p_queue;
    END IF;
END
$$;

-- A join's check: records the join (p_id null: a new row, whose id is returned; the rows of joins of the queue whose
-- session ended go), then returns the items not finished. The row is recorded before the count, so a completion that
-- empties the queue after the count sees it, and wakes the join. A completion running at the same moment may see
-- neither (its look at the joins came before this commit, and its delete after this count): the join then sees it at
-- its next poll.
CREATE OR REPLACE FUNCTION __schema__.queue_join(p_queue text, p_id bigint, p_owner uuid, p_session bigint,
    OUT join_id bigint, OUT unfinished bigint)
LANGUAGE plpgsql AS $$
BEGIN
    join_id := p_id;
    IF join_id IS NULL THEN
        DELETE FROM __schema__.queue_joins j WHERE j.queue = p_queue AND NOT __schema__.session_alive(j.session);
        join_id := nextval('__schema__.ids');
        INSERT INTO __schema__.queue_joins (id, queue, owner, session) VALUES (join_id, p_queue, p_owner, p_session);
    END IF;
    SELECT c.unfinished INTO unfinished FROM __schema__.queue_counts(p_queue) c;
END
$$;

-- Ends a join (see queue_join); a no-op for one already gone.
CREATE OR REPLACE FUNCTION __schema__.queue_join_end(p_id bigint, p_owner uuid)
RETURNS void
LANGUAGE sql AS $$
    DELETE FROM __schema__.queue_joins j WHERE j.id = p_id AND j.owner = p_owner
$$;

-- Items waiting to be delivered, items not completed, and dead letters; an expired delivery, or one whose session is
-- gone, counts as what it becomes when a get next reclaims it: waiting again, or (its last attempt) a dead letter.
-- VOLATILE: session_alive takes a lock.
CREATE OR REPLACE FUNCTION __schema__.queue_counts(p_queue text, OUT waiting bigint, OUT unfinished bigint, OUT dead bigint)
LANGUAGE sql VOLATILE AS $$
    SELECT r.n + x.back, r.n + l.n - x.dead, d.n + x.dead
    FROM (SELECT count(*) AS n FROM __schema__.queue_items q WHERE q.queue = p_queue AND q.lease_token IS NULL) r,
         (SELECT count(*) AS n FROM __schema__.queue_items q WHERE q.queue = p_queue AND q.leased_until IS NOT NULL) l,
         -- Expired deliveries and those of dead sessions, counted where a get's reclaim will move them (see
         -- queue_reclaim and queue_end_deliveries); expired by the clock now, as the others judge it (a completion
         -- counts after it may have waited for a row).
         (SELECT count(*) FILTER (WHERE q.attempts < q.max_attempts) AS back,
                 count(*) FILTER (WHERE q.attempts >= q.max_attempts) AS dead
          FROM __schema__.queue_items q
          WHERE q.queue = p_queue AND q.leased_until IS NOT NULL
            AND (q.leased_until <= clock_timestamp() OR NOT __schema__.session_alive(q.session))) x,
         (SELECT count(*) AS n FROM __schema__.queue_dead_letters d WHERE d.queue = p_queue) d
$$;

-- The heartbeat: extends the leases the coordinator still knows it holds (permits, deliveries) and its places in wait
-- lines, each by its own lease duration. Returns the lease tokens renewed; a token missing from the answer was lost (it
-- expired, its session ended, or an immediate shutdown dropped its item). Expired rows are never revived: someone else
-- may already count on their permit or have their item.
CREATE OR REPLACE FUNCTION __schema__.renew(
    p_owner uuid, p_session bigint, p_kinds "char"[], p_names text[], p_tokens bigint[], p_tickets bigint[], p_lease interval,
    p_items bigint[], p_item_tokens bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_ok boolean;
    v_set record;
    v_now timestamptz;
BEGIN
    v_ok := __schema__.require_session(p_session);
    -- The turn of every permit set whose rows this touches, first and in one order (as end_session, the other call that
    -- takes several): an acquire or a release locks a set's rows in its own order while it has the turn, so taking it
    -- here means never meeting one of them halfway (a release locks the permit it frees, then the place it grants one
    -- to; a renewal of both would lock them the other way round, and the server would fail one of the two).
    FOR v_set IN
        SELECT t.kind, t.name FROM unnest(p_kinds, p_names) AS t(kind, name)
        UNION
        SELECT w.kind, w.name FROM __schema__.permit_waiters w WHERE w.ticket = ANY (p_tickets) AND w.owner = p_owner
        UNION
        -- Without places to renew, not read at all (a one-time filter): the table has a row for every permit of every
        -- set ever used, and ticket is not indexed (see permit_slots).
        SELECT h.kind, h.name FROM __schema__.permit_slots h
        WHERE cardinality(p_tickets) > 0 AND h.ticket = ANY (p_tickets) AND h.owner = p_owner
        ORDER BY 1, 2
    LOOP
        v_ok := __schema__.permit_turn(v_set.kind, v_set.name);
    END LOOP;
    -- Expiries are judged by the clock after the turns, not the transaction's start: a renewal that waited for a turn
    -- past an expiry must not revive what the others, judging by the clock, already count as free (a permit) or gone
    -- (a place in line). The same in every function that takes a turn.
    v_now := clock_timestamp();
    IF cardinality(p_tickets) > 0 THEN
        UPDATE __schema__.permit_waiters w SET expires_at = v_now + p_lease
        WHERE w.ticket = ANY (p_tickets) AND w.owner = p_owner AND w.expires_at > v_now;
        -- A permit granted to a waiter that has not claimed it yet is kept for it, as its place was. Not one it has
        -- claimed (a renewal sent while it still waited): that lease is renewed by its token, or lost.
        UPDATE __schema__.permit_slots h SET expires_at = v_now + h.lease
        WHERE h.ticket = ANY (p_tickets) AND h.owner = p_owner AND h.acquired_at IS NULL AND h.expires_at > v_now;
    END IF;
    RETURN QUERY
        UPDATE __schema__.permit_slots h SET expires_at = v_now + h.lease
        FROM unnest(p_kinds, p_names, p_tokens) AS r(kind, name, token)
        WHERE h.kind = r.kind AND h.name = r.name AND h.token = r.token AND h.owner = p_owner AND h.expires_at > v_now
        RETURNING h.token;
    IF cardinality(p_items) > 1 THEN
        v_ok := __schema__.queue_lock_items(p_items, p_owner);
    END IF;
    RETURN QUERY
        UPDATE __schema__.queue_items q SET leased_until = now() + q.lease
        FROM unnest(p_items, p_item_tokens) AS r(id, token)
        WHERE q.id = r.id AND q.lease_token = r.token AND q.lease_owner = p_owner
          AND coalesce(q.leased_until, '-infinity') > clock_timestamp()
        RETURNING q.lease_token;
END
$$;

-- A coordinator that closes gives back everything its session holds, rather than leave it to expiry.
CREATE OR REPLACE FUNCTION __schema__.end_session(p_owner uuid, p_session bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_ok boolean;
    v_set record;
    v_item record;
    v_dead text[] := '{}';
    v_queue text;
BEGIN
    -- The turn of every permit set the session has a row in, first and in one order, as renew takes them: a renewal
    -- still running locks a place in line, then a permit, which this would otherwise lock the other way round.
    FOR v_set IN
        SELECT h.kind, h.name FROM __schema__.permit_slots h WHERE h.owner = p_owner AND h.session = p_session
        UNION
        SELECT w.kind, w.name FROM __schema__.permit_waiters w WHERE w.owner = p_owner AND w.session = p_session
        ORDER BY 1, 2
    LOOP
        v_ok := __schema__.permit_turn(v_set.kind, v_set.name);
    END LOOP;
    UPDATE __schema__.permit_slots h SET token = NULL, ticket = NULL, owner = NULL, session = NULL
    WHERE h.owner = p_owner AND h.session = p_session;
    DELETE FROM __schema__.permit_waiters w WHERE w.owner = p_owner AND w.session = p_session;
    DELETE FROM __schema__.queue_joins j WHERE j.owner = p_owner AND j.session = p_session;
    -- One by one, locked in the order of their ids (see queue_lock_items), each checked again under its lock.
    FOR v_item IN
        SELECT q.id, q.queue FROM __schema__.queue_items q
        WHERE q.lease_token IS NOT NULL AND q.lease_owner = p_owner AND q.session = p_session
        ORDER BY q.id
        FOR UPDATE
    LOOP
        IF __schema__.queue_end_deliveries(ARRAY[v_item.id], ARRAY['session ended']) = 0 THEN
            v_dead := v_dead || v_item.queue;
        END IF;
    END LOOP;
    -- Dead letters end items: in each such queue's count turn (the caller wakes the joins once this has committed), taken
    -- after every row is locked and in one order.
    FOR v_queue IN SELECT DISTINCT d.queue FROM unnest(v_dead) AS d(queue) ORDER BY 1 LOOP
        PERFORM __schema__.queue_count_turn(v_queue);
    END LOOP;
END
$$;

INSERT INTO __schema__.schema_version (version) VALUES (1) ON CONFLICT DO NOTHING;
