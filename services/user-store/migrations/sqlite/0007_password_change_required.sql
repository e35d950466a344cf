-- The user should choose a new password: the one they migrated with is shorter than the
-- sign-up minimum or in the breached-password corpus, or an operator asked. Logins still
-- succeed and say so; ChangePassword and ResetPassword clear it.
ALTER TABLE users ADD COLUMN password_change_required BOOLEAN NOT NULL DEFAULT FALSE;
