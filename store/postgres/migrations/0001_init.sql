-- Records: one row per sandbox. Filterable fields are columns; times are BIGINT unix
-- nanoseconds (UTC), NULL for the zero time, exactly as in the SQLite store. Ids and
-- setting keys use the "C" collation so ordering and prefixes are bytewise, like Go's.
CREATE TABLE records (
	id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	name           TEXT    NOT NULL DEFAULT '',
	backend        TEXT    NOT NULL,
	session_id     TEXT    NOT NULL DEFAULT '',
	status         TEXT    NOT NULL,
	last_error     TEXT    NOT NULL DEFAULT '',
	handle_backend TEXT    NOT NULL DEFAULT '',
	handle_version INTEGER NOT NULL DEFAULT 0,
	handle_state   JSON,             -- kept byte for byte; NULL when empty
	spec           JSON,             -- kept byte for byte; NULL when empty
	labels         JSONB   NOT NULL DEFAULT '{}', -- object of strings; filtered with @>
	created_at     BIGINT,
	updated_at     BIGINT,
	last_used      BIGINT,
	expires_at     BIGINT,
	version        BIGINT  NOT NULL
);

-- A name is unique among records that are not destroyed; empty names are not names.
CREATE UNIQUE INDEX records_live_name ON records (name)
	WHERE status <> 'destroyed' AND name <> '';

CREATE INDEX records_created ON records (created_at, id);
CREATE INDEX records_session ON records (session_id) WHERE session_id <> '';
CREATE INDEX records_status ON records (status);
CREATE INDEX records_labels ON records USING GIN (labels jsonb_path_ops);

CREATE TABLE settings (
	key   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	value BYTEA NOT NULL
);
