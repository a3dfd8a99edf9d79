-- Records: one row per sandbox. Filterable fields are columns; times are INTEGER unix
-- nanoseconds (UTC), NULL for the zero time.
CREATE TABLE records (
	id             TEXT    NOT NULL PRIMARY KEY,
	name           TEXT    NOT NULL DEFAULT '',
	backend        TEXT    NOT NULL,
	session_id     TEXT    NOT NULL DEFAULT '',
	status         TEXT    NOT NULL,
	last_error     TEXT    NOT NULL DEFAULT '',
	handle_backend TEXT    NOT NULL DEFAULT '',
	handle_version INTEGER NOT NULL DEFAULT 0,
	handle_state   TEXT,             -- JSON, kept byte for byte; NULL when empty
	spec           TEXT,             -- JSON, kept byte for byte; NULL when empty
	labels         TEXT    NOT NULL DEFAULT '{}', -- JSON object of strings
	created_at     INTEGER,
	updated_at     INTEGER,
	last_used      INTEGER,
	expires_at     INTEGER,
	version        INTEGER NOT NULL
);

-- A name is unique among records that are not destroyed; empty names are not names.
CREATE UNIQUE INDEX records_live_name ON records (name)
	WHERE status != 'destroyed' AND name != '';

CREATE INDEX records_created ON records (created_at, id);
CREATE INDEX records_session ON records (session_id) WHERE session_id != '';
CREATE INDEX records_status ON records (status);

CREATE TABLE settings (
	key   TEXT NOT NULL PRIMARY KEY,
	value BLOB NOT NULL
);
