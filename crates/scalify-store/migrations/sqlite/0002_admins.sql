-- Administrators (the admin dashboard). Also grantable in config (`admins`).
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
