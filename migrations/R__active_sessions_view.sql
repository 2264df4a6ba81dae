-- Repeatable: re-applied whenever this file changes.
CREATE OR REPLACE VIEW active_sessions AS
SELECT s.id, s.user_id, u.email, s.created_at, s.expires_at
FROM sessions s
JOIN users u ON u.id = s.user_id
WHERE s.expires_at > now();
