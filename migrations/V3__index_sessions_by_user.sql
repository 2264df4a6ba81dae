-- Built without blocking writes to a live table. CREATE INDEX CONCURRENTLY cannot run in a
-- transaction, so premigrate runs this file outside one (it detects that on its own).
CREATE INDEX CONCURRENTLY IF NOT EXISTS sessions_user_id_idx ON sessions (user_id);
