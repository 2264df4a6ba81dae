ALTER TABLE users ADD COLUMN last_login_at timestamptz;

COMMENT ON COLUMN users.last_login_at IS 'Set by the app on each successful login; NULL = never.';
