-- Scale-out on Citus (docs/scale-out.md): the tables distributed by
-- tenant_id and the recording functions delegated to the worker that holds
-- the tenant's shards.

COMMENT ON FUNCTION authaudit.record_events(text, jsonb) IS
    'Records a JSON array of one tenant''s events in one transaction; returns the stored rows in input order.';

-- Run once on the Citus coordinator, as a superuser, after
-- CREATE EXTENSION citus and pg_authaudit on every node and citus_add_node
-- for every worker. Idempotent: what is distributed already is left as it
-- is. Returns each object and what it became.
CREATE FUNCTION authaudit.distribute(shard_count integer DEFAULT 32)
RETURNS TABLE (object text, distributed_as text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Every table keyed by tenant_id, colocated with the log: a tenant's
    -- rows of all of them are on one worker.
    by_tenant constant text[] := ARRAY[
        'authaudit.auth_log', 'authaudit.lockout_state', 'authaudit.lockout_ip_state',
        'authaudit.lockout_ip_account_state', 'authaudit.lockout_snapshots',
        'authaudit.lockout_snapshot_invalidations', 'authaudit.checkpoints',
        'authaudit.event_minutes', 'authaudit.event_minutes_rolled',
        'authaudit.witness_checkpoints', 'authaudit.witness_disagreements'];
    -- Read by every call on every worker.
    everywhere constant text[] := ARRAY['authaudit.tenant_scope', 'authaudit.lockout_policy'];
    -- The functions that write a tenant's rows, and their tenant argument:
    -- each runs on the worker holding the tenant's shards.
    delegated constant text[][] := ARRAY[
        ['authaudit.record_event(uuid, text, text, text, text, text, inet, text, timestamptz, jsonb)', '$2'],
        ['authaudit.record_events(text, jsonb)', '$1'],
        ['authaudit.check_login(text, text, inet)', '$1'],
        ['authaudit.record_token_issued(uuid, text, text, text, text, inet, text, text, timestamptz, jsonb)', '$2'],
        ['authaudit.checkpoint(text)', '$1']];
    t text;
    i integer;
    fresh boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'pg_authaudit: authaudit.distribute() needs the citus extension in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'CREATE EXTENSION citus and pg_authaudit on every node, add the workers, then call authaudit.distribute() on the coordinator (docs/scale-out.md).';
    END IF;
    shard_count := coalesce(shard_count, 32);
    IF shard_count < 1 THEN
        RAISE EXCEPTION 'pg_authaudit: shard_count must be positive, not %', shard_count
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The append-only triggers go with the tables to their shards.
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    -- A shard moves by logical replication, which needs every table's rows
    -- identified: the per-minute counts have a unique key over a nullable
    -- column, not a primary key.
    ALTER TABLE authaudit.event_minutes REPLICA IDENTITY FULL;
    FOREACH t IN ARRAY everywhere LOOP
        object := t;
        EXECUTE 'SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1::regclass)'
            INTO STRICT fresh USING t;
        IF fresh THEN
            EXECUTE 'SELECT pg_catalog.create_reference_table($1::regclass)' USING t;
        END IF;
        distributed_as := 'reference table';
        RETURN NEXT;
    END LOOP;
    FOREACH t IN ARRAY by_tenant LOOP
        object := t;
        EXECUTE 'SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1::regclass)'
            INTO STRICT fresh USING t;
        IF fresh THEN
            IF t = 'authaudit.auth_log' THEN
                EXECUTE 'SELECT pg_catalog.create_distributed_table($1::regclass, ''tenant_id'', shard_count => $2)'
                    USING t, shard_count;
            ELSE
                EXECUTE 'SELECT pg_catalog.create_distributed_table($1::regclass, ''tenant_id'', colocate_with => ''authaudit.auth_log'')'
                    USING t;
            END IF;
        END IF;
        distributed_as := 'distributed by tenant_id';
        RETURN NEXT;
    END LOOP;
    FOR i IN 1 .. array_length(delegated, 1) LOOP
        object := delegated[i][1];
        EXECUTE 'SELECT pg_catalog.create_distributed_function($1::regprocedure, $2, colocate_with => ''authaudit.auth_log'', force_delegation => true)'
            USING delegated[i][1], delegated[i][2];
        distributed_as := 'delegated by tenant_id';
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION authaudit.distribute(integer) FROM PUBLIC;

COMMENT ON FUNCTION authaudit.distribute(integer) IS
    'On a Citus coordinator: distributes the tables by tenant_id and delegates the recording functions to the tenant''s worker (docs/scale-out.md).';
