-- Administrators (the admin dashboard). Also grantable in config (`admins`).
ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT false;
