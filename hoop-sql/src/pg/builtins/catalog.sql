-- PostgreSQL's built-in routines and operators, as hoop's SQL dialect lists
-- them (hoop-sql/src/pg/builtins/generated.rs). Read by `cargo xtask
-- pg-builtins`, which writes that file, and by the test that checks it
-- against the live server (hoop-sql/tests/pg_builtins.rs). Run it with
-- `psql -XAt -f catalog.sql`.
--
-- Built in means: in the pg_catalog schema, with an OID below
-- FirstNormalObjectId (16384), so created by initdb and never by a user or
-- an extension. One line per routine name (overloads merged: every kind its
-- overloads have, and the most volatile of their volatilities), then one per
-- operator symbol, fields separated by single spaces (no name or symbol in
-- pg_catalog holds one):
--   F name kinds volatility    kinds: f function, a aggregate, w window, p procedure
--   O symbol                   volatility: i immutable, s stable, v volatile
SELECT line FROM (
  SELECT 'F', p.proname::text,
         'F ' || p.proname || ' '
           || string_agg(DISTINCT p.prokind::text, '' ORDER BY p.prokind::text) || ' '
           || CASE max(CASE p.provolatile WHEN 'i' THEN 0 WHEN 's' THEN 1 ELSE 2 END)
                WHEN 0 THEN 'i' WHEN 1 THEN 's' ELSE 'v' END
  FROM pg_catalog.pg_proc p
  WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.oid < 16384
  GROUP BY p.proname
  UNION
  SELECT 'O', o.oprname::text, 'O ' || o.oprname
  FROM pg_catalog.pg_operator o
  WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oid < 16384
) AS builtins (kind, name, line)
ORDER BY kind, name COLLATE "C";
