-- Per-turn reads must not grow with a session's age: a long-lived session (a personal
-- assistant's) holds thousands of turns.
--
-- Open events: one small partial index instead of two over every event. It answers "this
-- session's open events in order" (the actor, once per turn), the ingest's count of waiting
-- events, and "sessions with open events" (start-up); rows leave it when their turn ends.
DROP INDEX events_open;
DROP INDEX events_by_session;
CREATE INDEX events_open_by_session ON events (session_id, seq) WHERE status IN ('pending', 'running');

-- A session's turns by id (time-ordered ids): the history a turn's context needs is the last
-- few completed turns before it, a short backward walk instead of a sort of all of them.
DROP INDEX turns_by_session;
CREATE INDEX turns_by_session ON turns (session_id, id);
