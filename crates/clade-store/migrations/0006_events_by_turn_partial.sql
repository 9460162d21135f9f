-- An event has no turn until its turn starts. Indexed with a NULL key, every accepted event
-- put an entry among the index's NULLs and its turn moved it to the end: two more pages
-- rewritten per turn, for entries nothing looks up. Only events that have a turn are indexed.
DROP INDEX events_by_turn;
CREATE INDEX events_by_turn ON events (turn_id) WHERE turn_id IS NOT NULL;
