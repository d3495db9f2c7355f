-- The ticker's "did anything commit since the last tick?" check (tick_if_changed and
-- covering_tick, 0007) looks for changes by txid. PL/pgSQL caches the plan of that check
-- for the life of the ticker's session, and a plan made while the change log was small
-- (at start-up) is a sequential scan: once the log holds 100,000 changes, every tick
-- (up to a few hundred a second under writes) read all of them, several milliseconds
-- each. With sequential scans off inside these two functions, the check is always an
-- index lookup, whatever the size of the log when the plan was made. The functions
-- themselves are unchanged.
ALTER FUNCTION basalt.tick_if_changed(boolean) SET enable_seqscan = off;
ALTER FUNCTION basalt.covering_tick() SET enable_seqscan = off;
